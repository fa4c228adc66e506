"""linkd's transaction coordinator: transactional ids, their state machine and their durable log."""
