"""Procession: process managers (orchestrated sagas) on Kafka and in memory."""
