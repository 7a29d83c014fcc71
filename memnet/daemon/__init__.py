"""The memnet daemon: a libp2p node serving and fetching cubes, driven by the CLI over a local
control channel."""
