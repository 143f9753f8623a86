"""Experience banks over a LangGraph store, storage backends and the results database."""
