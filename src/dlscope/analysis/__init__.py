"""Analysis tools that work on any model and data: curvature (`analysis.hessian`), trajectories
(`analysis.pca`), input sensitivity (`analysis.sensitivity`) and linear interpolation between two
models (`analysis.interpolation`). Import the submodule you need, e.g.
`from dlscope.analysis import hessian`."""
