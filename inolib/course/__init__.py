"""The course's tools: figures, interactive explorers, notebook helpers, the book, the demo and its report,
and the measurements the lessons make (tokens, out-view agreement, MIM, collapse)."""
