"""The hivemind bridge: a child process of the daemon (asyncio + hivemind only; hivemind and
py-libp2p cannot share a process) with the node's own identity and PeerID on hivemind's network.
It serves layer spans of the pinned model (server.py), announces them in hivemind's DHT, and runs
distributed generations for this node's CLI over a local channel (chain.py, local.py). Cubes
come from the node's store, and through the daemon's control channel when they must be fetched.
Nothing here imports libp2p or trio."""
