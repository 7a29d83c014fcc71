"""The libp2p side of memnet: host, streams, DHT records."""
