"""Research and monitoring over result files: `scanner stats` and `scanner diff`.

Theory of operation
-------------------
Everything here reads files, never the network (docs/research.md). A results file is
read once, line by line (`lines.read_results`): each JSON line of a schema version
this scanner knows becomes a typed `ScanLine`; anything else is counted as skipped
(`lines.SkipTally`), with a note naming an unknown `schema_version`. From there:

- `measures`: the adoption funnel, each stage conditional on every stage before it;
- `taxonomy`: misconfigurations by kind, one data table of categories and one of
  text patterns per category, so a new kind is one row;
- `groups`: the MX provider (registrable domain under the ICANN section of the
  Public Suffix List snapshot shipped by `publicsuffixlist`), the TLD, the rank bucket;
- `statistics`: the counters over a stream of lines, per scan date;
- `tables`: the statistics as neutral tables, shown by `views` (terminal, CSV),
  `page` (one offline HTML page, with `charts` as inline SVG) and as JSON;
- `metadata`: the `<results>.meta.json` sidecar `scanner scan` writes, and the rules
  that refuse a comparison the metadata makes unsound;
- `diff` (one domain over time) and `vantage` (one MX address from several vantages).

`cli.register` adds the `stats` and `diff` commands to the application.
"""
