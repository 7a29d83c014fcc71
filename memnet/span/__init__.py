"""Distributed inference, Petals-style: span servers hold a contiguous range of a pinned model's
layers; a client routes hidden states through a chain of them. This package is pure or torch-only
(no libp2p, no hivemind): the protocol and its sessions, the DHT record layout, the route
planner, the admission budget and the layer executor. The hivemind side runs in the bridge
process (memnet/bridge)."""
