"""flows: orchestration and the edges — manifest, storage, Prefect flows, report and CLI."""

import stylecore  # noqa: E402, F401  (sets TensorFlow's log level before anything imports it)
