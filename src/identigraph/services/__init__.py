"""Local stand-ins for the production services: Gremlin Server (for Neptune) and ElasticMQ (for SQS)."""
