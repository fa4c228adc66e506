"""The admin HTTP API (Kafka REST v3 cluster-linking shape) and Prometheus metrics."""
