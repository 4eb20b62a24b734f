"""MedFedChain: federated medical AI with SMPC verification and a permissioned ledger."""
