"""Benchmarks on real images: COCO captions with CHAIR, and POPE yes/no questions."""
