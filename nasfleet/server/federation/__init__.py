"""The Flower server: the ServerApp, one federation round, and the simulation that runs it locally."""
