"""Research-only command-line tools: GPU batching, packing the cleaned data, choosing an ensemble,
unpacking a shipped one.
"""
