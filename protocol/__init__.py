"""Sans-IO Kafka wire codec: bytes in, typed messages out, and back. No sockets, no trio, no files."""
