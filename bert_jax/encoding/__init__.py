"""The parts of `bert-jax encode` (bert_jax/encode.py) around the model:

sources.py   the input's records, streamed: text lines, a JSONL field, a CSV/TSV column or
             a TFDS feature; bad records refused or skipped and reported
batches.py   a window of lines -> length-sorted, packed or bucketed batches of rows
outputs.py   one .npy or a directory of .npy shards with a manifest, written as it goes and
             resumable
"""
