"""Secure multi-party computation for MedFedChain: encrypted verification and secure aggregation
on TF-Encrypted (SecureNN), with in-process or remote players.

Entry points: `smpc.factory.build_secure_components` (verifier and aggregator sharing one
session) and `smpc.player.main` (one remote player process). Importing this package does not
import TensorFlow; its modules do.
"""
