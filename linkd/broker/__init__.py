"""The Kafka listener: linkd as a broker for the topics it hosts."""
