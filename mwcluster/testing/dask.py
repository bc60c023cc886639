"""A Dask cluster for the dask executor's tests (needs mwcluster[dask]): a LocalCluster in the
calling process (processes=False: its Dask workers are threads of that process, so they import
its handler modules and share its registry), on 127.0.0.1 with random ports, that can be
closed and started again on the same port (a scheduler restart)."""

from __future__ import annotations

import distributed


class DaskCluster:
    def __init__(self, local_directory: str) -> None:
        self.local_directory = local_directory
        self.port = 0
        self.cluster = None
        self.start()

    def start(self) -> None:
        """Start (again): the first start picks a free port, the next ones take the same."""
        self.cluster = distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, protocol="tcp",
            host="127.0.0.1", scheduler_port=self.port, dashboard_address="127.0.0.1:0",
            local_directory=self.local_directory)
        self.address = self.cluster.scheduler_address
        self.port = int(self.address.rsplit(":", 1)[1])

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None

    def our_keys(self) -> list[str]:
        """The keys of the scheduler's tasks that a mwcluster worker submitted."""
        return [k for k in list(self.cluster.scheduler.tasks) if str(k).startswith("mwcluster-")]

    def executing(self) -> int:
        """Tasks its Dask workers are running now."""
        return sum(w.state.executing_count for w in list(self.cluster.workers.values()))
