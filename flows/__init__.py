"""flows: orchestration and the edges — manifest, storage, Prefect flows, report and CLI."""
