"""Broker drivers: ``memory`` (in-process) and ``amqp`` (RabbitMQ through kombu)."""
