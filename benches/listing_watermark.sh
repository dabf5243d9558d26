#!/usr/bin/env bash
# Object-store listing: `mode: full` vs `mode: after_watermark` on an S3-compatible server.
#   BACKFLOW_TEST_S3_ENDPOINT=http://127.0.0.1:PORT benches/listing_watermark.sh [FILES]
# Uploads FILES (default 5000) one-line NDJSON drops under dt= prefixes into a fresh bucket, then
# for each mode runs `backflow run drops` twice (the second run finds nothing new) and prints the
# wall times. Needs a built `backflow` ($CARGO_TARGET_DIR/debug or target/debug) and the tool
# venv's python with boto3 (installed with moto by `scripts/dev tools`).
set -euo pipefail
endpoint=${BACKFLOW_TEST_S3_ENDPOINT:?set BACKFLOW_TEST_S3_ENDPOINT to a moto/S3 endpoint}
files=${1:-5000}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${CARGO_TARGET_DIR:-$root/target}/debug/backflow
python=${BACKFLOW_TEST_PYTHON:-${BACKFLOW_CACHE:-$HOME/.cache/backflow}/tools/py/bin/python}
bucket=wmbench-$(date +%s)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export AWS_ENDPOINT=$endpoint AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
  AWS_ALLOW_HTTP=true AWS_EC2_METADATA_DISABLED=true
"$python" - "$endpoint" "$bucket" "$files" <<'PY'
import sys, boto3, concurrent.futures as cf
endpoint, bucket, files = sys.argv[1], sys.argv[2], int(sys.argv[3])
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test",
                  aws_secret_access_key="test", region_name="us-east-1")
s3.create_bucket(Bucket=bucket)
def put(i):
    key = f"drops/dt=2026-03-{1 + i // 2000:02d}/part-{i:06d}.ndjson"
    s3.put_object(Bucket=bucket, Key=key, Body=f'{{"n":{i},"ts":"2026-03-01T00:00:00Z"}}\n'.encode())
with cf.ThreadPoolExecutor(16) as ex:
    list(ex.map(put, range(files)))
PY
for mode in full after_watermark; do
  dir=$work/$mode
  mkdir -p "$dir/pipelines" "$dir/schemas"
  cat > "$dir/pipelines/drops.yaml" <<YAML
name: drops
source:
  type: object_store_files
  url: s3://$bucket/drops
  max_files_per_batch: 1000
  listing: {mode: $mode}
transforms:
  - cast: {n: int64, ts: timestamp}
sink: {type: parquet, dataset: drops, partition_by: {column: ts, granularity: day}}
YAML
  for run in ingest nothing_new; do
    start=$(date +%s.%N)
    (cd "$dir" && "$bin" run drops --json 2>/dev/null | tail -1 >/dev/null)
    end=$(date +%s.%N)
    printf '%-16s %-12s %6.2f s\n' "$mode" "$run" "$(echo "$end - $start" | bc)"
  done
done
