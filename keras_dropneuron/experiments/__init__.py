"""The paper's experiments, run by `keras-dropneuron reproduce` (not imported by the library).

`setups` holds the networks and training set-ups (a module per family), `data`
the data sets, `methods` the training-method options, `runner` trains and
prunes, `measure` slims, verifies and counts, `timing` measures inference,
`summary` tabulates over seeds. The frontier sweep: `grid` parses the grid,
`frontier` trains and writes it, `pareto` summarizes it. `plots` draws figures
with matplotlib.
"""
