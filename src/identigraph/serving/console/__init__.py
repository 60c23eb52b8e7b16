"""The review console: the people who work the manual-review queue get web pages, and their verdicts a table.

``store`` (sqlite: cases, claims, verdicts, audit, sessions), ``intake`` (review queue → store, exactly once),
``evidence`` (the case page's graph read and its drawing), ``verdicts`` (a verdict applied to the graph),
``router`` (the pages, behind the ``review`` scope). The labeling job reads the verdict table
(``identigraph.labeling.verdicts``).
"""
