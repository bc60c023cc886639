"""Workers through a manual failover (real processes): two workers given both master
endpoints run a job; the standby is promoted mid-job; the workers move to the new master by
themselves and the job completes there with the result computed directly."""

from __future__ import annotations

from mwcluster import Client
from mwcluster.demo import job as demo_job
from mwcluster.testing.cluster import WorkerProcess
from mwcluster.testing import MasterProcess, wait_for
from mwcluster.testing.failover import StandbyProcess

SHARDS, RECORDS = 24, 200


def assert_result_is_direct(client: Client, job: str) -> None:
    """The finished job's combined result is the word count computed directly."""
    tasks = client.job_tasks(job, 0, 1000)
    assert demo_job.combine([t["result"] for t in tasks]) == demo_job.direct(7, SHARDS, RECORDS)


def test_running_job_completes_after_a_manual_promotion(tmp_path):
    with MasterProcess(tmp_path / "m", durability="sync") as master, \
            StandbyProcess(tmp_path / "c", master) as standby:
        both = f"{master.client_endpoint},{standby.promote_client_endpoint}"
        workers = [WorkerProcess(f"w{n}", both, slots=2, handlers=["mwcluster.demo.job"])
                   for n in (1, 2)]
        try:
            for w in workers:
                w.start()
            with Client([master.client_endpoint, standby.promote_client_endpoint],
                        timeout_s=5, retries=6) as client:
                job = client.submit_job("wc", demo_job.HANDLER,
                                        demo_job.job_inputs(7, SHARDS, RECORDS),
                                        params={"read_delay_ms": 150}, max_attempts=4)

                def succeeded() -> int:
                    return client.job_status(job)["counts"].get("succeeded", 0)
                wait_for(lambda: succeeded() >= 2, 60, "some tasks done before the failover")
                assert succeeded() < SHARDS
                report = standby.promote()
                assert report["old_master_fenced"] and report["records_missing"] == 0
                wait_for(lambda: client.job_status(job)["state"] == "succeeded", 120,
                         "the job to complete on the new master")
                assert client.epochs.highest == report["epoch"]
                assert client.status()["epoch"] == report["epoch"]
                assert_result_is_direct(client, job)
        finally:
            for w in workers:
                w.stop()
        assert standby.terminate() == 0


def test_workers_vote_and_their_job_completes_after_an_automatic_failover(tmp_path):
    old = MasterProcess(tmp_path / "m", durability="sync")
    with old, StandbyProcess(tmp_path / "c", old, failover="auto",
                             failover_timeout_s=3.0) as standby:
        both = f"{old.client_endpoint},{standby.promote_client_endpoint}"
        workers = [WorkerProcess(f"w{n}", both, slots=2, handlers=["mwcluster.demo.job"],
                                 extra_args=("--standby-status", standby.status_endpoint))
                   for n in (1, 2)]
        try:
            for w in workers:
                w.start()
            with Client([old.client_endpoint], timeout_s=5) as client:   # votes for nobody
                job = client.submit_job("wc", demo_job.HANDLER,
                                        demo_job.job_inputs(7, SHARDS, RECORDS),
                                        params={"read_delay_ms": 150}, max_attempts=4)
                wait_for(lambda: client.job_status(job)["counts"].get("succeeded", 0) >= 2,
                         60, "some tasks done before the kill")
            old.kill()
            # only the workers, which cannot reach the master, vote for the standby
            wait_for(lambda: standby.master_info() is not None, 60, "the standby to serve")
            with Client([standby.promote_client_endpoint], timeout_s=10) as client:
                wait_for(lambda: client.job_status(job)["state"] == "succeeded", 120,
                         "the job to complete on the new master")
                assert_result_is_direct(client, job)
        finally:
            for w in workers:
                w.stop()
        assert standby.terminate() == 0
