"""The transcript explorer: `introspectd explore` (a local read-only server) and the static
`explorer.html` that `report --explorer` writes. The page (web/) is shared by both."""
