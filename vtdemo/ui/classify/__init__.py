"""The Classify tab: two classifier columns side by side (`column.py`), each with its panels (`sizes`,
`inspector`, `sanity`, `compare`, `stages`) and their pure views (`views`, `sanity_views`, `panel_views`); `tab.py`
assembles them with the export."""
