"""Datasets (CIFAR-10, scikit-learn digits, synthetic) and their partitioning across devices."""
