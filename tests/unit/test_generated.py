"""The committed generated code must match proto/scheduler.proto (run `make build` when it does not)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ("scheduler_pb2.py", "scheduler_pb2_grpc.py", "scheduler_pb2.pyi")


def test_generated_code_is_current(tmp_path):
    out = tmp_path / "jobcluster" / "pb"
    out.mkdir(parents=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-Ijobcluster/pb={ROOT / 'proto'}",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            "jobcluster/pb/scheduler.proto",
        ],
        check=True,
        cwd=ROOT,
    )
    for name in GENERATED:
        fresh = (out / name).read_text()
        committed = (ROOT / "jobcluster" / "pb" / name).read_text()
        assert fresh == committed, f"jobcluster/pb/{name} is stale: run `make build` and commit it"


def test_wire_compatible_with_the_original_messages():
    from jobcluster.pb import scheduler_pb2 as pb

    expected = {
        "Job": {"id": 1, "command": 2, "created_at": 3},
        "JobResponse": {"job_id": 1, "success": 2, "message": 3},
        "JobId": {"id": 1},
        "JobStatus": {"id": 1, "status": 2, "output": 3, "created_at": 4, "updated_at": 5},
    }
    assert pb.DESCRIPTOR.package == "scheduler"
    for message, fields in expected.items():
        desc = pb.DESCRIPTOR.message_types_by_name[message]
        for name, number in fields.items():
            assert desc.fields_by_name[name].number == number, (message, name)
    service = pb.DESCRIPTOR.services_by_name["JobService"]
    assert service.full_name == "scheduler.JobService"
    assert service.methods_by_name["SubmitJob"].input_type.name == "Job"
    assert service.methods_by_name["SubmitJob"].output_type.name == "JobResponse"
    assert service.methods_by_name["GetJobStatus"].input_type.name == "JobId"
    assert service.methods_by_name["GetJobStatus"].output_type.name == "JobStatus"
