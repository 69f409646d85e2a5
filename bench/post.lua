-- wrk script: POST a real image as multipart/form-data to /predict.
-- The body is prepared by bench/run.py (BENCH_BODY file, BENCH_BOUNDARY).
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.path = "/predict"
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. os.getenv("BENCH_BOUNDARY")
