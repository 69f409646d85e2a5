-- wrk script: POST a prepared body (BENCH_BODY file) to BENCH_PATH (default /predict) with
-- the Content-Type BENCH_CONTENT_TYPE and, for the Open Inference Protocol's binary tensor
-- data extension, Inference-Header-Content-Length BENCH_HEADER_LENGTH. Set by bench/run.py.
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH") or "/predict"
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
wrk.headers["Inference-Header-Content-Length"] = os.getenv("BENCH_HEADER_LENGTH")
