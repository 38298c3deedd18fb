"""The Erlang distribution protocol: EPMD, the handshake, and a hidden-node connection."""
