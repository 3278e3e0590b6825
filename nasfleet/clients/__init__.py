"""The device side: the Flower ClientApp, data characteristics, hardware profile and local training."""
