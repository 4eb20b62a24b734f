"""Secure multi-party computation for MedFedChain: encrypted verification and secure aggregation
on TF-Encrypted (SecureNN), each hospital sharing its own inputs.

Entry points: `smpc.factory.build_in_process` (every part in one process: simulations) and
`smpc.deployment` (a player process, the driver in the coordinator's process, a node's owner
links, over the mTLS gateways of `smpc.transport`). Importing this package does not import
TensorFlow; its modules do.
"""
