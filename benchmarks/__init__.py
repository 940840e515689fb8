"""`make bench`: speed/quality benchmarks, each printing ratios vs a reference measured in the same run."""
