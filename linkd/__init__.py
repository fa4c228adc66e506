"""linkd: a byte-for-byte cluster-link daemon that speaks the Kafka wire protocol."""

__version__ = "0.1.0"
