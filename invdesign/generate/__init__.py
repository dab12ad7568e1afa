"""Inverse design: conditional flow on the embedding, decoder, candidate checks, design pipeline."""
