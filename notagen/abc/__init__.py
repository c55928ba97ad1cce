"""ABC text tools: cleanup, interleaving, transposition, validity checks (pure text → text, no torch)."""
