"""What crosses a boundary: the wire messages and their checks, Flower record packing, JSON codecs."""
