"""flows: everything around the core, in layers whose imports point one way only.

cli/ → the flow (batch, shards, tasks) → the domain (prepare, featurecache, outputs, oom, report,
contactsheet, artifacts, devices) → io (manifest/, storage/) → names and nouns (uri, model).
"""

import stylecore  # noqa: E402, F401  (sets TensorFlow's log level before anything imports it)
