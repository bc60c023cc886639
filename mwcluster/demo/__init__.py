"""`mwcluster demo` and `mwcluster demo-crash`.

    cluster.py  `mwcluster demo`: a master, a checkpoint node and workers on this machine
                running a word-count job, checked against the direct count
    job.py      the demo's dataset and its word-count handler (`--handlers mwcluster.demo.job`)
    crash.py    `mwcluster demo-crash`: the engine alone, killed with SIGKILL and recovered
"""
