"""`telescope batch-study`: Muon against AdamW across batch sizes (arXiv 2505.02222 §2)."""
