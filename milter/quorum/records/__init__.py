"""Session records: one record per transaction to a capped Redis Stream (`[records]`), read back by
`quorum stats`; `quorum evaluate` judges a labelled corpus with every engine and combine mode."""
