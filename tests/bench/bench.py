#!/usr/bin/python3
"""estuary benchmark harness (issue 5): estuary vs nginx, HAProxy, h2o and Varnish, one table.

Started by tests/bench/run.sh (which installs packages and builds estuary); stdlib only.
Everything listens on and talks to 127.0.0.1.  Every process started here is stopped by
its PID (also on Ctrl-C / SIGTERM).  See tests/bench/README-style notes in RESULTS.md.

Layout per run:  origin nginx (1 worker) and the load generator pinned to BENCH_LOAD_CPU,
the proxy under test (1 worker) pinned to BENCH_PROXY_CPU.  For every round, for every
scenario, each peer in turn: start it fresh, check its output, warm up, measure, read its
CPU time and peak RSS from /proc, stop it.
"""
import base64
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CLK = os.sysconf("SC_CLK_TCK")
SMOKE = "--smoke" in sys.argv[1:]


def env(name, default, conv=str):
    v = os.environ.get(name)
    return conv(v) if v not in (None, "") else default


DURATION = env("BENCH_DURATION", 2.0 if SMOKE else 10.0, float)
WARMUP = env("BENCH_WARMUP", 0.5 if SMOKE else 1.0, float)
ROUNDS = env("BENCH_ROUNDS", 1 if SMOKE else 3, int)
PEERS = env("BENCH_PEERS", "estuary" if SMOKE else "estuary,nginx,haproxy,h2o,varnish").split(",")
# the smoke run (CI) has S6 (estuary's cache, ~3 s) but not S6h (three runs, nginx + lua replicas)
SCENARIOS = env("BENCH_SCENARIOS", "S1,S2,S2b,S3,S3u,S4,S5,S6,S7,S8" if SMOKE
                else "S1,S2,S2b,S3,S3u,S4,S5,S6,S6h,S7,S8").split(",")
FILE_MIB = env("BENCH_FILE_MIB", 64 if SMOKE else 1024, int)
S3_DOWNLOADS = env("BENCH_S3_DOWNLOADS", 2 if SMOKE else 3, int)
CONNS = env("BENCH_CONNS", 64, int)
S4_CONNS = env("BENCH_S4_CONNS", 5000, int)
H2_STREAMS = env("BENCH_H2_STREAMS", 10, int)
PROXY_CPU = env("BENCH_PROXY_CPU", "0")
LOAD_CPU = env("BENCH_LOAD_CPU", "1")
PORT = env("BENCH_PORT", 18100, int)
ESTUARY_BIN = env("ESTUARY_BIN", os.path.join(ROOT, "build-bench", "estuary"))
KEEP = env("BENCH_KEEP", "0") == "1"
OUT_JSON = env("BENCH_OUT", "")
ACCESS_LOG = env("BENCH_ESTUARY_ACCESS_LOG", "off")   # "off" like the peers; "stderr"/path/"default"
ESTUARY_CHECK = {}

ORIGIN_PORT, H1_PORT, H2_PORT, SINK_PORT, REDIS_PORT = PORT, PORT + 1, PORT + 2, PORT + 3, PORT + 4
# S6h: the two replicas of the hedged upstream (one nginx + lua process on the load CPU)
REPLICA_A_PORT, REPLICA_B_PORT = PORT + 5, PORT + 6
# S6h load: few connections, each paced (wrk's delay(): ms before its next request) so that the
# proxy is not saturated and the latency is the backends', not a queue's
S6H_CONNS = env("BENCH_S6H_CONNS", 16, int)
S6H_PACE_MS = env("BENCH_S6H_PACE_MS", 5, int)
S6H_SLOW_MS, S6H_SLOW_P = 200, 0.05
# S6h: estuary without and with "hedge" on the upstream; one table row each
S6H_VARIANTS = [("estuary", None),
                ("estuary+hedge auto", {"delay": "auto", "max": 1, "budget": "10%"}),
                ("estuary+hedge 20ms", {"delay": "20ms", "max": 1, "budget": "10%"})]
CURRENT_HEDGE = [None]  # the "hedge" object of the S6h variant one_run is starting
# S6: peers that cache (HAProxy's cache and h2o's are left out: the issue names nginx and Varnish)
CACHE_PEERS = ("estuary", "nginx", "varnish")
# S3u: uploads go to this origin (tests/bench/upload_sink.py), which reads each body whole
# before it answers, and discards it
UPLOAD_PEERS = ("estuary", "nginx")

# Fixed origin bodies per path pattern.  A float and nested arrays make the merge do real JSON
# work (and catch re-serialisation that changes numbers or order).
USERS_BODY = b'{"id":123,"name":"Ada Lovelace","email":"ada@example.com","active":true,"tags":["admin","beta"]}'
ORDERS_BODY = (b'{"id":456,"product":"Widget","qty":2,"total":19.99,'
               b'"items":[{"sku":"A-1","n":1},{"sku":"B-2","n":1}]}')
EXPECTED_MERGE = {"user": json.loads(USERS_BODY), "order": json.loads(ORDERS_BODY)}
# S2b: a 1 MB reply (an array of small objects: strings, reals, a nested array) merged with
# USERS_BODY; served by the origin as a static file
S2B_BIG_BODY = (b'{"items":[' + b",".join(
    b'{"id":%d,"name":"item %d","price":%d.99,"tags":["a","b"],"stock":%d}' % (i, i, i % 100, i % 7)
    for i in range(15500)) + b'],"total":15500}')
EXPECTED_S2B = {"user": json.loads(USERS_BODY), "big": json.loads(S2B_BIG_BODY)}
# exact bytes accepted for the merged document: the origin's key order and number spelling
# kept, in the two usual layouts (", "/": " as estuary writes it, or compact)
EXPECTED_MERGE_BYTES = {json.dumps(EXPECTED_MERGE).encode(),
                        json.dumps(EXPECTED_MERGE, separators=(",", ":")).encode()}

SCEN = {
    "S1": dict(desc="pass-through GET /users/1, %d conns (wrk)" % CONNS, path="/users/1", tool="wrk", conns=CONNS),
    "S2": dict(desc="aggregate GET /gateway/123/456, %d conns (wrk)" % CONNS, path="/gateway/123/456", tool="wrk", conns=CONNS),
    "S2b": dict(desc="aggregate GET /gateway2/123: a %d KB reply merged with a small one, %d conns (wrk); "
                     "estuary vs nginx + lua" % (len(S2B_BIG_BODY) // 1000, min(CONNS, 16)),
                path="/gateway2/123", tool="wrk", conns=min(CONNS, 16)),
    "S3": dict(desc="%d MiB download through the proxy (curl x%d)" % (FILE_MIB, S3_DOWNLOADS), path="/files/big.bin", tool="curl"),
    "S3u": dict(desc="%d MiB upload through the proxy, streamed (curl -T x%d; origin: upload_sink.py)"
                % (FILE_MIB, S3_DOWNLOADS), path="/upload/big.bin", tool="curl"),
    "S4": dict(desc="S1 with %d keep-alive conns (wrk)" % S4_CONNS, path="/users/1", tool="wrk", conns=S4_CONNS),
    "S5": dict(desc="S1 over h2c prior knowledge, %d conns x %d streams (h2load)" % (CONNS, H2_STREAMS),
               path="/users/1", tool="h2load", conns=CONNS),
    # the response cache (issue 17): S1's reply with Cache-Control: max-age=3600 from the origin,
    # caches warmed before the measured window, which must cost the origin no request
    "S6": dict(desc="cached GET /cached/users/1 at 100%% hits (S1's reply, max-age=3600), %d conns (wrk); "
                    "estuary cache vs nginx proxy_cache vs Varnish 7 (-s malloc,256m)" % CONNS,
               path="/cached/users/1", tool="wrk", conns=CONNS),
    "S6h": dict(desc="hedging: GET /hedge/users/1 over 2 replicas, one answers in %d ms on %d%% of its requests; "
                     "%d conns each paced %d ms (wrk delay()); estuary without / with \"hedge\" (no peer hedges)"
                     % (S6H_SLOW_MS, S6H_SLOW_P * 100, S6H_CONNS, S6H_PACE_MS),
                path="/hedge/users/1", tool="wrk", conns=S6H_CONNS),
    # estuary's policies (issue 15): no peer in Debian has them built in, so these compare with
    # estuary's own S1 of the same run (CPU ratio, added p50)
    "S7": dict(desc="S1 behind a JWT policy (RS256, one token: the verified-token cache), estuary only (wrk)",
               path="/jwt/users/1", tool="wrk", conns=CONNS),
    "S8": dict(desc="S1 behind a Redis rate limit (redis-server on the load CPU; never over the limit), "
                    "estuary only (wrk)", path="/limited/users/1", tool="wrk", conns=CONNS),
    # tracing (issue 18): S1 with every request traced (server + client span exported as OTLP
    # JSON) and with 1 % sampled; the collector is the origin nginx (POST /v1/traces -> 200)
    "S1t": dict(desc="S1 with tracing, sample_ratio 1.0 (OTLP/HTTP JSON to the origin nginx), estuary only (wrk)",
                path="/users/1", tool="wrk", conns=CONNS),
    "S1t01": dict(desc="S1 with tracing, sample_ratio 0.01, estuary only (wrk)", path="/users/1", tool="wrk", conns=CONNS),
}
TRACE_RATIO = {"S1t": 1.0, "S1t01": 0.01}
CURRENT_SCEN = [None]   # the scenario one_run is starting (estuary_cmd adds "tracing" for S1t*)
ESTUARY_ONLY = ("S7", "S8", "S1t", "S1t01", "S6h")
BEARER = {}         # S7: {"token": ..., "jwks": path}, made at start with the openssl CLI
REDIS_UP = False    # S8: redis-server started on REDIS_PORT

PROCS = []          # every Popen we started (stopped by PID)
TMP = None
NOTES = []          # skipped peers, correctness notes
FAILURES = []       # estuary failures -> non-zero exit


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- process management
def children_of(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    st = f.read()
                if int(st.rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def start(name, cmd, cpu, extra_env=None):
    logf = open(os.path.join(TMP, name + ".log"), "ab")
    e = dict(os.environ)
    if extra_env:
        e.update(extra_env)
    p = subprocess.Popen(["taskset", "-c", str(cpu)] + cmd, stdout=logf, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, env=e, cwd=TMP, start_new_session=True)
    p.bench_name = name
    p.bench_log = logf.name
    PROCS.append(p)
    return p


def stop(p, timeout=10):
    if p.poll() is None:
        kids = children_of(p.pid)
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        for k in kids:          # e.g. h2o's backtrace helper: stop it by its PID too
            try:
                os.kill(k, signal.SIGTERM)
            except ProcessLookupError:
                pass
    if p in PROCS:
        PROCS.remove(p)


def stop_all(*_):
    for p in list(PROCS):
        try:
            stop(p, 5)
        except Exception:
            pass
    if TMP and not KEEP and not FAILURES:
        shutil.rmtree(TMP, ignore_errors=True)
    elif TMP and FAILURES:
        shutil.rmtree(os.path.join(TMP, "www"), ignore_errors=True)
        log("estuary failed: configs and logs kept in %s" % TMP)


def on_signal(sig, _frm):
    log("interrupted (signal %d): stopping everything" % sig)
    stop_all()
    sys.exit(130)


def wait_port(port, p, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        if p.poll() is not None:
            raise RuntimeError("%s exited with %s; log: %s" % (p.bench_name, p.returncode, tail(p.bench_log)))
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("%s: port %d not open after %ds" % (p.bench_name, port, timeout))


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK       # utime + stime, all threads


def tree(pid):
    """pid and all its descendants (Varnish: the manager and its child; h2o: its helper)."""
    out, todo = [], [pid]
    while todo:
        q = todo.pop()
        out.append(q)
        todo += children_of(q)
    return out


def tree_cpu_seconds(pid):
    """CPU of a peer's whole process tree, so that a multi-process peer (Varnish) is counted whole."""
    total = 0.0
    for q in tree(pid):
        try:
            total += cpu_seconds(q)
        except (OSError, ValueError, IndexError):
            pass        # exited in between
    return total


def tree_vm_hwm_kib(pid):
    total = 0
    for q in tree(pid):
        try:
            total += vm_hwm_kib(q)
        except OSError:
            pass
    return total


def vm_hwm_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def port_free(port):
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


# ---------------------------------------------------------------- configs
def write(name, text):
    path = os.path.join(TMP, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def origin_conf():
    os.makedirs(os.path.join(TMP, "www", "big"), exist_ok=True)
    with open(os.path.join(TMP, "www", "big", "s2b.json"), "wb") as f:
        f.write(S2B_BIG_BODY)
    return write("origin.conf", """
worker_processes 1; daemon off; master_process off;
pid %(t)s/origin.pid; error_log %(t)s/origin-error.log warn;
events { worker_connections 16384; }
http {
  access_log off; sendfile on; tcp_nopush on;
  keepalive_requests 100000000; keepalive_timeout 300s;
  server {
    listen 127.0.0.1:%(port)d backlog=4096;
    root %(t)s/www;
    location /users/  { default_type application/json; return 200 '%(users)s'; }
    location /orders/ { default_type application/json; return 200 '%(orders)s'; }
    location /big/    { default_type application/json; }
    location /files/  { }
    location = /v1/traces { default_type application/json; return 200 '{}'; }
    # S6: cacheable (RFC 9111 5.2.2.1); its own access log counts what reaches the origin
    location /cached/ { access_log %(t)s/origin-cached.log; add_header Cache-Control "max-age=3600" always;
                        default_type application/json; return 200 '%(users)s'; }
  }
}
""" % dict(t=TMP, port=ORIGIN_PORT, users=USERS_BODY.decode(), orders=ORDERS_BODY.decode()))


def replicas_conf():
    """S6h: replica A answers at once; replica B sleeps S6H_SLOW_MS on S6H_SLOW_P of its
    requests (non-blocking ngx.sleep).  Each has its own access log: backend requests counted."""
    return write("replicas.conf", """
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 1; daemon off; master_process off;
pid %(t)s/replicas.pid; error_log %(t)s/replicas-error.log warn;
events { worker_connections 4096; }
http {
  keepalive_requests 100000000; keepalive_timeout 300s;
  server {
    listen 127.0.0.1:%(a)d backlog=4096; access_log %(t)s/replica-a.log;
    location / { default_type application/json; return 200 '%(users)s'; }
  }
  server {
    listen 127.0.0.1:%(b)d backlog=4096; access_log %(t)s/replica-b.log;
    location / {
      default_type application/json;
      content_by_lua_block {
        if math.random() < %(p)s then ngx.sleep(%(sec)s) end
        local body = [[%(users)s]]
        ngx.header["Content-Length"] = #body
        ngx.print(body)
      }
    }
  }
}
""" % dict(t=TMP, a=REPLICA_A_PORT, b=REPLICA_B_PORT, users=USERS_BODY.decode(), p=S6H_SLOW_P,
           sec=S6H_SLOW_MS / 1000.0))


def log_lines(name):
    """Requests an nginx access log in TMP has recorded (0 if it does not exist yet)."""
    try:
        with open(os.path.join(TMP, name), "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def estuary_cmd():
    conf = {
        "listen": [{"host": "127.0.0.1", "port": H1_PORT}],
        "workers": 1,
        "shutdown_timeout": "1s",
        "upstreams": {"origin": {"targets": ["http://127.0.0.1:%d" % ORIGIN_PORT],
                                 "pool": {"max_idle": 256}},
                      "sink": {"targets": ["http://127.0.0.1:%d" % SINK_PORT]}},
        "routes": [
            {"path": "/gateway/{user_id}/{order_id}", "backends": [
                {"upstream": "origin", "path": "/users/{user_id}", "group": "user"},
                {"upstream": "origin", "path": "/orders/{order_id}", "group": "order"}]},
            {"path": "/gateway2/{user_id}", "backends": [
                {"upstream": "origin", "path": "/users/{user_id}", "group": "user"},
                {"upstream": "origin", "path": "/big/s2b.json", "group": "big"}]},
            {"path": "/users/{rest...}", "proxy": {"upstream": "origin", "path": "/users/{rest...}"}},
            {"path": "/files/{rest...}", "proxy": {"upstream": "origin", "path": "/files/{rest...}"}},
            {"path": "/upload/{rest...}", "methods": ["POST", "PUT"], "max_request_body": "64GiB", "timeout": "60s",
             "proxy": {"upstream": "sink", "path": "/upload/{rest...}"}},
        ],
    }
    # the policy keys only when their scenarios run (a build without them refuses unknown keys)
    if "jwks" in BEARER:  # made by main() when S7 runs
        conf.setdefault("auth", {})["jwt"] = {"bench": {"jwks_file": BEARER["jwks"], "algorithms": ["RS256"]}}
        conf["routes"].append({"path": "/jwt/users/{rest...}", "auth": ["bench"],
                               "proxy": {"upstream": "origin", "path": "/users/{rest...}"}})
    if REDIS_UP:  # started by main() when S8 runs
        conf["redis"] = {"address": "127.0.0.1:%d" % REDIS_PORT, "timeout": "50ms", "on_failure": "deny"}
        conf["rate_limits"] = {"bench": {"rate": 1000000000, "per": "1s", "key": "client_ip", "store": "redis"}}
        conf["routes"].append({"path": "/limited/users/{rest...}", "rate_limit": "bench",
                               "proxy": {"upstream": "origin", "path": "/users/{rest...}"}})
    if CURRENT_SCEN[0] == "S6":  # the cache only in S6's runs: the other scenarios run without a store
        conf["cache"] = {"max_size": "256MiB"}
        conf["routes"].append({"path": "/cached/{rest...}", "cache": {"ttl": "60s"},
                               "proxy": {"upstream": "origin", "path": "/cached/{rest...}"}})
    if CURRENT_SCEN[0] == "S6h":
        up = {"targets": ["http://127.0.0.1:%d" % REPLICA_A_PORT, "http://127.0.0.1:%d" % REPLICA_B_PORT],
              "pool": {"max_idle": 64}}
        if CURRENT_HEDGE[0]:
            up["hedge"] = CURRENT_HEDGE[0]
        conf["upstreams"]["replicas"] = up
        conf["routes"].append({"path": "/hedge/{rest...}", "proxy": {"upstream": "replicas", "path": "/users/{rest...}"}})
    if CURRENT_SCEN[0] in TRACE_RATIO:
        conf["tracing"] = {"otlp_endpoint": "http://127.0.0.1:%d/v1/traces" % ORIGIN_PORT,
                           "sample_ratio": TRACE_RATIO[CURRENT_SCEN[0]]}
    # access logs are off for every peer (nginx access_log off, no HAProxy/h2o log); builds
    # that predate the "access_log" key reject it (unknown keys are errors): then leave it out
    if ACCESS_LOG != "default":
        conf["access_log"] = ACCESS_LOG
    path = write("estuary.json", json.dumps(conf, indent=1))
    if "access_log" in conf:
        if ESTUARY_CHECK.get("access_log") is None:
            try:
                r = subprocess.run([ESTUARY_BIN, "--check", "-c", path], capture_output=True, text=True,
                                   timeout=30, stdin=subprocess.DEVNULL)
                ok, why = r.returncode == 0, (r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[0]
            except subprocess.TimeoutExpired:
                ok, why = False, "--check did not exit"
            ESTUARY_CHECK["access_log"] = ok
            if not ok:
                NOTES.append("estuary --check rejected \"access_log\" (%s): run without the key" % why[:120])
        if not ESTUARY_CHECK["access_log"]:
            del conf["access_log"]
            path = write("estuary.json", json.dumps(conf, indent=1))
    return [ESTUARY_BIN, "-c", path], {"ESTUARY_LOG_LEVEL": "warn"}, H1_PORT


def nginx_cmd():
    shutil.rmtree(os.path.join(TMP, "nginx-cache"), ignore_errors=True)   # cold at every start
    path = write("nginx.conf", """
%(lua)s
worker_processes 1; daemon off; master_process off;
pid %(t)s/nginx.pid; error_log %(t)s/nginx-error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 16384; }
http {
  access_log off;
  keepalive_requests 100000000; keepalive_timeout 300s;
  %(cpath)s
  %(cache)s
  upstream origin { server 127.0.0.1:%(o)d; keepalive 256; keepalive_requests 100000000; keepalive_timeout 300s; }
  upstream sink { server 127.0.0.1:%(sink)d; keepalive 16; }
  server {
    listen 127.0.0.1:%(h1)d backlog=4096;
    listen 127.0.0.1:%(h2)d http2 backlog=4096;
    proxy_http_version 1.1; proxy_set_header Connection "";
    location / { proxy_pass http://origin; }
    location /_sub/ { internal; proxy_pass http://origin/; }
    location /upload/ { proxy_request_buffering off; client_max_body_size 0; proxy_pass http://sink; }
    %(cached)s
    %(gw)s
  }
}
""" % dict(t=TMP, o=ORIGIN_PORT, h1=H1_PORT, h2=H2_PORT, sink=SINK_PORT,
           # S6 only: the cache in files (page cache), its keys in shared memory, as nginx does it
           cache=("proxy_cache_path %s/nginx-cache levels=1:2 keys_zone=bench:10m max_size=256m inactive=60m "
                  "use_temp_path=off;" % TMP) if CURRENT_SCEN[0] == "S6" else "",
           cached=("location /cached/ { proxy_cache bench; proxy_cache_lock on; proxy_pass http://origin;\n"
                   "                        add_header X-Cache-Status $upstream_cache_status; }")
           if CURRENT_SCEN[0] == "S6" else "",
           lua=("load_module /usr/lib/nginx/modules/ndk_http_module.so;\n"
                "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;") if HAVE["nginx_lua"] else "",
           cpath='lua_package_cpath "/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;;";' if HAVE["nginx_lua"] else "",
           gw=r"""location ~ ^/gateway/([^/]+)/([^/]+)$ {
      content_by_lua_block {
        local cjson = require "cjson"
        local r1, r2 = ngx.location.capture_multi{ {"/_sub/users/" .. ngx.var[1]}, {"/_sub/orders/" .. ngx.var[2]} }
        if r1.status ~= 200 or r2.status ~= 200 then ngx.status = 502; ngx.say('{"error":"upstream"}'); return end
        ngx.header.content_type = "application/json"
        ngx.print('{"user":', cjson.encode(cjson.decode(r1.body)), ',"order":', cjson.encode(cjson.decode(r2.body)), '}')
      }
    }
    location ~ ^/gateway2/([^/]+)$ {
      content_by_lua_block {
        local cjson = require "cjson"
        local r1, r2 = ngx.location.capture_multi{ {"/_sub/users/" .. ngx.var[1]}, {"/_sub/big/s2b.json"} }
        if r1.status ~= 200 or r2.status ~= 200 then ngx.status = 502; ngx.say('{"error":"upstream"}'); return end
        ngx.header.content_type = "application/json"
        ngx.print('{"user":', cjson.encode(cjson.decode(r1.body)), ',"big":', cjson.encode(cjson.decode(r2.body)), '}')
      }
    }""" if HAVE["nginx_lua"] else ""))
    return ["nginx", "-c", path, "-p", TMP], None, H2_PORT


def haproxy_cmd():
    path = write("haproxy.cfg", """
global
  nbthread 1
  maxconn 9000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:%(h1)d backlog 4096
  bind 127.0.0.1:%(h2)d proto h2 backlog 4096
  default_backend be
backend be
  server o1 127.0.0.1:%(o)d
""" % dict(h1=H1_PORT, h2=H2_PORT, o=ORIGIN_PORT))
    return ["haproxy", "-f", path, "-db"], None, H2_PORT


def h2o_cmd():
    mruby = """
      /gateway:
        mruby.handler: |
          Proc.new do |env|
            m = /\\A\\/([^\\/]+)\\/([^\\/]+)\\z/.match(env["PATH_INFO"])
            u = http_request("http://127.0.0.1:%(o)d/users/#{m[1]}")
            o = http_request("http://127.0.0.1:%(o)d/orders/#{m[2]}")
            us, uh, ub = u.join
            os, oh, ob = o.join
            if us != 200 || os != 200
              [502, {"content-type" => "application/json"}, ["{\\"error\\":\\"upstream\\"}"]]
            else
              [200, {"content-type" => "application/json"},
               [JSON.generate({"user" => JSON.parse(ub.join), "order" => JSON.parse(ob.join)})]]
            end
          end""" % dict(o=ORIGIN_PORT) if HAVE["h2o_mruby"] else ""
    path = write("h2o.conf", """
user: root
num-threads: 1
max-connections: 20000
pid-file: %(t)s/h2o.pid
listen:
  host: 127.0.0.1
  port: %(h1)d
hosts:
  default:
    paths:%(mruby)s
      /:
        proxy.reverse.url: http://127.0.0.1:%(o)d/
""" % dict(t=TMP, h1=H1_PORT, o=ORIGIN_PORT, mruby=mruby))
    return ["h2o", "-c", path], None, H1_PORT


def varnish_cmd():
    """Varnish 7 (S6 only): the built-in VCL caches the origin's max-age reply.  One thread pool
    (one CPU) of 100-1000 threads (a thread per busy connection: 64 wrk connections fit), the
    cache in 256 MiB of malloc storage; in the foreground (-F), no privilege drop (-j none), no
    CLI port (-T none).  Its manager and child processes are both counted (tree_cpu_seconds)."""
    workdir = os.path.join(TMP, "varnish")
    shutil.rmtree(workdir, ignore_errors=True)
    vcl = write("varnish.vcl", """vcl 4.1;
backend origin { .host = "127.0.0.1"; .port = "%d"; }
""" % ORIGIN_PORT)
    return [shutil.which("varnishd") or "/usr/sbin/varnishd", "-F", "-j", "none", "-T", "none", "-n", workdir, "-a", "127.0.0.1:%d" % H1_PORT,
            "-f", vcl, "-s", "malloc,256m", "-p", "thread_pools=1", "-p", "thread_pool_min=100",
            "-p", "thread_pool_max=1000"], None, H1_PORT


PEER_DEF = {
    "estuary": dict(cmd=estuary_cmd, label="estuary"),
    "nginx": dict(cmd=nginx_cmd, label="nginx"),
    "haproxy": dict(cmd=haproxy_cmd, label="haproxy"),
    "h2o": dict(cmd=h2o_cmd, label="h2o"),
    "varnish": dict(cmd=varnish_cmd, label="varnish"),
}
HAVE = {}


def detect():
    HAVE["estuary"] = os.access(ESTUARY_BIN, os.X_OK)
    HAVE["nginx"] = shutil.which("nginx") is not None
    HAVE["haproxy"] = shutil.which("haproxy") is not None
    HAVE["h2o"] = shutil.which("h2o") is not None
    HAVE["varnish"] = shutil.which("varnishd") is not None or os.access("/usr/sbin/varnishd", os.X_OK)
    HAVE["nginx_lua"] = (HAVE["nginx"] and os.path.exists("/usr/lib/nginx/modules/ngx_http_lua_module.so")
                         and os.path.exists("/usr/lib/x86_64-linux-gnu/lua/5.1/cjson.so"))
    HAVE["h2o_mruby"] = False
    if HAVE["h2o"]:
        v = subprocess.run(["h2o", "--version"], capture_output=True, text=True).stdout
        HAVE["h2o_mruby"] = "mruby: YES" in v
    HAVE["wrk"] = shutil.which("wrk") is not None
    HAVE["h2load"] = shutil.which("h2load") is not None
    HAVE["curl"] = shutil.which("curl") is not None
    HAVE["redis"] = shutil.which("redis-server") is not None


def peer_supports(peer, scen):
    """(True, None) or (False, reason)."""
    if peer == "varnish" and scen != "S6":
        return False, None      # a cache only: no row in the other scenarios
    if scen == "S6" and peer not in CACHE_PEERS:
        return False, "S6 compares estuary with nginx proxy_cache and Varnish"
    if scen == "S6h":
        if peer != "estuary":
            return False, "%s has no request hedging: estuary without and with hedge" % peer
        if not HAVE["nginx_lua"]:
            return False, "the replicas need libnginx-mod-http-lua"
    if not HAVE[peer]:
        return False, "%s not installed" % peer
    if scen == "S2b" and peer not in ("estuary", "nginx"):
        return False, "S2b compares estuary with nginx + lua only"
    if scen in ("S2", "S2b"):
        if peer == "haproxy":
            return False, "HAProxy has no response aggregation"
        if peer == "nginx" and not HAVE["nginx_lua"]:
            return False, "libnginx-mod-http-lua/lua-cjson not installed"
        if peer == "h2o" and not HAVE["h2o_mruby"]:
            return False, "this h2o build has no mruby"
    if scen == "S3u" and peer not in UPLOAD_PEERS:
        return False, "S3u compares estuary with nginx only"
    if scen in ESTUARY_ONLY and peer != "estuary":
        return False, "estuary's own policy (compared with estuary's S1)"
    if scen == "S8" and not HAVE["redis"]:
        return False, "redis-server not installed"
    tool = SCEN[scen]["tool"]
    if not HAVE[tool]:
        return False, "%s not installed" % tool
    return True, None


# ---------------------------------------------------------------- correctness
def http_get(port, path, n=1, headers=None):
    """n GETs on one keep-alive connection; returns list of (status, headers, body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out = []
    try:
        for _ in range(n):
            c.request("GET", path, headers=headers or {})
            r = c.getresponse()
            out.append((r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()))
            if r.will_close and len(out) < n:
                raise RuntimeError("connection not kept alive")
    finally:
        c.close()
    return out


def check(peer, scen, port):
    """Raise RuntimeError if the output is not exactly right."""
    path = SCEN[scen]["path"]
    if scen == "S7":  # no token: refused; the token: through
        st, _, body = http_get(port, path, 1)[0]
        if st != 401:
            raise RuntimeError("GET %s without a token: status %s body %r" % (path, st, body[:200]))
    if scen in ("S1", "S4", "S7", "S8", "S1t", "S1t01"):
        for st, hd, body in http_get(port, path, 3, scen_headers(scen)):
            if st != 200 or body != USERS_BODY:
                raise RuntimeError("GET %s: status %s body %r" % (path, st, body[:200]))
            if not hd.get("content-type", "").startswith("application/json"):
                raise RuntimeError("GET %s: content-type %r" % (path, hd.get("content-type")))
    elif scen in ("S6", "S6h"):
        replies = http_get(port, path, 3)
        for st, hd, body in replies:
            if st != 200 or body != USERS_BODY:
                raise RuntimeError("GET %s: status %s body %r" % (path, st, body[:200]))
            if not hd.get("content-type", "").startswith("application/json"):
                raise RuntimeError("GET %s: content-type %r" % (path, hd.get("content-type")))
        if scen == "S6":  # the last of three is a hit, in the peer's own words
            hd = replies[-1][1]
            hit = {"estuary": lambda: re.match(r"estuary; hit(;|$)", hd.get("cache-status", "")),
                   "nginx": lambda: hd.get("x-cache-status") == "HIT",
                   "varnish": lambda: len(hd.get("x-varnish", "").split()) == 2}[peer]()
            if not hit:
                raise RuntimeError("GET %s: third reply not a cache hit: %r" % (path, hd))
    elif scen == "S2":
        for st, hd, body in http_get(port, path, 3):
            if st != 200:
                raise RuntimeError("GET %s: status %s body %r" % (path, st, body[:300]))
            if not hd.get("content-type", "").startswith("application/json"):
                raise RuntimeError("GET %s: content-type %r" % (path, hd.get("content-type")))
            try:
                doc = json.loads(body, object_pairs_hook=lambda kv: kv)
                parsed = json.loads(body)
            except ValueError as e:
                raise RuntimeError("GET %s: not JSON (%s): %r" % (path, e, body[:300]))
            if parsed != EXPECTED_MERGE or [k for k, _ in doc] != ["user", "order"]:
                raise RuntimeError("GET %s: merged JSON wrong: %r" % (path, body[:400]))
            if body not in EXPECTED_MERGE_BYTES:
                msg = "%s S2: parsed JSON equal, bytes differ (key order / number spelling): %r" % (peer, body[:300])
                if peer == "estuary":
                    raise RuntimeError(msg)
                if not any(n.startswith(peer + " S2:") for n in NOTES):
                    NOTES.append(msg)
            if peer == "estuary" and hd.get("x-estuary-completed") != "true":
                raise RuntimeError("X-Estuary-Completed: %r" % hd.get("x-estuary-completed"))
    elif scen == "S2b":
        for st, hd, body in http_get(port, path, 2):
            if st != 200:
                raise RuntimeError("GET %s: status %s body %r" % (path, st, body[:300]))
            try:
                doc = json.loads(body, object_pairs_hook=lambda kv: kv)
                parsed = json.loads(body)
            except ValueError as e:
                raise RuntimeError("GET %s: not JSON (%s): %r" % (path, e, body[:300]))
            if parsed != EXPECTED_S2B or [k for k, _ in doc] != ["user", "big"]:
                raise RuntimeError("GET %s: merged JSON wrong: %r" % (path, body[:400]))
            if peer == "estuary" and body != b'{"user":' + USERS_BODY + b',"big":' + S2B_BIG_BODY + b"}":
                raise RuntimeError("GET %s: estuary changed bytes of the replies: %r" % (path, body[:400]))
    elif scen == "S3":
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        c.request("GET", path)
        r = c.getresponse()
        h = hashlib.sha256()
        n = 0
        while True:
            b = r.read(1 << 20)
            if not b:
                break
            n += len(b)
            h.update(b)
        c.close()
        if r.status != 200 or n != FILE_BYTES or h.hexdigest() != FILE_SHA:
            raise RuntimeError("download: status %s, %d bytes (want %d), sha256 %s" % (r.status, n, FILE_BYTES, h.hexdigest()))
    elif scen == "S3u":
        # the whole file, hashed by the origin: once with its length, once chunked
        for chunked in (False, True):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            with open(os.path.join(TMP, "www", "files", "big.bin"), "rb") as f:
                if chunked:
                    c.request("PUT", path, body=iter(lambda: f.read(1 << 20), b""), encode_chunked=True,
                              headers={"X-Hash": "1", "Transfer-Encoding": "chunked"})
                else:
                    c.request("PUT", path, body=f, headers={"X-Hash": "1", "Content-Length": str(FILE_BYTES)})
                r = c.getresponse()
                body = r.read()
            c.close()
            try:
                doc = json.loads(body)
            except ValueError:
                doc = {}
            if r.status != 200 or doc.get("bytes") != FILE_BYTES or doc.get("sha256") != FILE_SHA:
                raise RuntimeError("upload (%s): status %s, origin got %r" % ("chunked" if chunked else "length",
                                                                              r.status, body[:200]))
    elif scen == "S5":
        r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", os.path.join(TMP, "h2.body"),
                            "-w", "%{http_code} %{http_version}", "http://127.0.0.1:%d%s" % (port, path)],
                           capture_output=True, text=True, timeout=30)
        with open(os.path.join(TMP, "h2.body"), "rb") as f:
            body = f.read()
        if r.stdout.strip() != "200 2" or body != USERS_BODY:
            raise RuntimeError("h2c GET %s: %r %r body %r" % (path, r.stdout, r.stderr, body[:200]))
        res = run_h2load(port, path, 4, H2_STREAMS, None, n=200)
        if res["requests"] != 200 or res["errors"]:
            raise RuntimeError("h2load check: %r" % res)


# ---------------------------------------------------------------- load
UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def ms(s):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", s)
    return float(m.group(1)) * UNIT[m.group(2)]


def scen_headers(scen):
    return {"Authorization": "Bearer " + BEARER["token"]} if scen == "S7" else {}


def make_bearer():
    """An RSA key, its JWKS and one RS256 token (exp in a day), made with the openssl CLI
    (the harness stays stdlib-only)."""
    def b64u(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    key = os.path.join(TMP, "jwt-key.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key],
                   check=True, capture_output=True)
    mod = subprocess.run(["openssl", "rsa", "-in", key, "-noout", "-modulus"], check=True, capture_output=True,
                         text=True).stdout.strip().split("=", 1)[1]
    jwks = {"keys": [{"kty": "RSA", "kid": "bench", "alg": "RS256", "use": "sig",
                      "n": b64u(bytes.fromhex(mod)), "e": b64u((65537).to_bytes(3, "big"))}]}
    BEARER["jwks"] = write("jwks.json", json.dumps(jwks))
    header = b64u(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "bench"}).encode())
    payload = b64u(json.dumps({"sub": "bench", "exp": int(time.time()) + 86400}).encode())
    signing = (header + "." + payload).encode()
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing, check=True,
                         capture_output=True).stdout
    BEARER["token"] = header + "." + payload + "." + b64u(sig)


def run_wrk(port, path, conns, duration, headers=None, script=None):
    cmd = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", "-c%d" % conns, "-d%ds" % max(1, round(duration)), "--latency",
           "--timeout", "5s"]
    if script:
        cmd += ["-s", script]
    for k, v in (headers or {}).items():
        cmd += ["-H", "%s: %s" % (k, v)]
    cmd.append("http://127.0.0.1:%d%s" % (port, path))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    out = r.stdout
    res = {"raw": out}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if not m:
        raise RuntimeError("wrk output not understood: %r %r" % (out[:200], r.stderr[:200]))
    res["requests"] = int(m.group(1))
    res["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    for q in ("50", "99"):
        m = re.search(r"^\s+%s%%\s+(\S+)" % q, out, re.M)
        res["p" + q] = ms(m.group(1)) if m else None
    err, detail = 0, []
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        err += sum(int(x) for x in m.groups())
        detail += ["%s %s" % (k, v) for k, v in zip(("connect", "read", "write", "timeout"), m.groups()) if v != "0"]
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        err += int(m.group(1))
        detail.append("non-2xx %s" % m.group(1))
    res["errors"] = err
    if detail:
        res["error_detail"] = ", ".join(detail)
    return res


def run_h2load(port, path, conns, streams, duration, n=None):
    logf = os.path.join(TMP, "h2load.log")
    cmd = ["taskset", "-c", LOAD_CPU, "h2load", "-t1", "-c%d" % conns, "-m%d" % streams]
    if n:
        cmd += ["-n%d" % n]
    else:
        cmd += ["-D", "%d" % max(1, round(duration)), "--log-file", logf]
    cmd.append("http://127.0.0.1:%d%s" % (port, path))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=(duration or 10) + 120)
    out = r.stdout
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", out)
    if not m:
        raise RuntimeError("h2load output not understood: %r %r" % (out[:300], r.stderr[:200]))
    total, started, done, ok, failed, errored, tmo = (int(x) for x in m.groups())
    m2 = re.search(r"status codes: (\d+) 2xx", out)
    ok2xx = int(m2.group(1)) if m2 else ok
    res = {"raw": out, "requests": ok2xx, "errors": failed + errored + tmo + (done - ok2xx if done > ok2xx else 0)}
    if res["errors"]:
        res["error_detail"] = "failed %d, errored %d, timeout %d, non-2xx %d" % (failed, errored, tmo, max(0, done - ok2xx))
    m = re.search(r"finished in ([\d.]+)(\w+), ([\d.]+) req/s", out)
    res["rps"] = float(m.group(3)) if m else None
    res["p50"] = res["p99"] = None
    if not n and os.path.exists(logf):
        lat = []
        with open(logf) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    lat.append(int(parts[2]))
        os.unlink(logf)
        if lat:
            lat.sort()
            res["p50"] = lat[len(lat) // 2] / 1000.0
            res["p99"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1000.0
    return res


def run_curl(port, path, count):
    total_bytes, total_time, errors, times = 0, 0.0, 0, []
    for _ in range(count):
        r = subprocess.run(["taskset", "-c", LOAD_CPU, "curl", "-sS", "-o", "/dev/null", "-w",
                            "%{http_code} %{size_download} %{time_total}", "http://127.0.0.1:%d%s" % (port, path)],
                           capture_output=True, text=True, timeout=600)
        try:
            code, size, t = r.stdout.split()
        except ValueError:
            code, size, t = "000", "0", "0"
        if code != "200" or int(size) != FILE_BYTES:
            errors += 1
        total_bytes += int(size)
        total_time += float(t)
        times.append(float(t) * 1000)
    return {"requests": count, "bytes": total_bytes, "errors": errors,
            "mbps": total_bytes / total_time / 1e6 if total_time else 0.0,
            "rps": None, "p50": statistics.median(times), "p99": max(times)}


def run_curl_upload(port, path, count):
    """curl -T: a streamed PUT of the S3 file (Content-Length; curl sends Expect: 100-continue)."""
    fpath = os.path.join(TMP, "www", "files", "big.bin")
    total_bytes, total_time, errors, times = 0, 0.0, 0, []
    for _ in range(count):
        r = subprocess.run(["taskset", "-c", LOAD_CPU, "curl", "-sS", "-T", fpath, "-o", "/dev/null", "-w",
                            "%{http_code} %{size_upload} %{time_total}", "http://127.0.0.1:%d%s" % (port, path)],
                           capture_output=True, text=True, timeout=600)
        try:
            code, size, t = r.stdout.split()
            size = int(float(size))
        except ValueError:
            code, size, t = "000", 0, "0"
        if code != "200" or size != FILE_BYTES:
            errors += 1
        total_bytes += size
        total_time += float(t)
        times.append(float(t) * 1000)
    return {"requests": count, "bytes": total_bytes, "errors": errors,
            "mbps": total_bytes / total_time / 1e6 if total_time else 0.0,
            "rps": None, "p50": statistics.median(times), "p99": max(times)}


def load(scen, port, duration):
    s = SCEN[scen]
    if scen == "S3u":
        return run_curl_upload(port, s["path"], S3_DOWNLOADS)
    if scen == "S6h":  # paced: wrk waits delay() ms before each next request of a connection
        script = write("pace.lua", "function delay()\n  return %d\nend\n" % S6H_PACE_MS)
        return run_wrk(port, s["path"], s["conns"], duration, None, script)
    if s["tool"] == "wrk":
        return run_wrk(port, s["path"], s["conns"], duration, scen_headers(scen))
    if s["tool"] == "h2load":
        return run_h2load(port, s["path"], s["conns"], H2_STREAMS, duration)
    return run_curl(port, s["path"], S3_DOWNLOADS)


# ---------------------------------------------------------------- one run
def backend_count(scen):
    """Requests the backends of S6 / S6h have received so far (their access logs)."""
    if scen == "S6":
        return log_lines("origin-cached.log")
    if scen == "S6h":
        return log_lines("replica-a.log") + log_lines("replica-b.log")
    return None


def one_run(peer, scen, hedge=None):
    CURRENT_SCEN[0] = scen
    CURRENT_HEDGE[0] = hedge
    cmd, extra_env, h2port = PEER_DEF[peer]["cmd"]()
    port = h2port if scen == "S5" else H1_PORT
    p = start(peer, cmd, PROXY_CPU, extra_env)
    try:
        wait_port(H1_PORT, p)
        if h2port != H1_PORT:
            wait_port(h2port, p)
        check(peer, scen, port)
        if WARMUP > 0 and scen not in ("S3", "S3u"):
            load(scen, port, WARMUP)
        if scen == "S6h":
            time.sleep(S6H_SLOW_MS / 1000.0 + 0.1)    # the warm-up's slow replies logged
        b0 = backend_count(scen)
        c0 = tree_cpu_seconds(p.pid)
        t0 = time.time()
        res = load(scen, port, DURATION)
        res["wall"] = time.time() - t0
        if p.poll() is not None:
            raise RuntimeError("%s died during the run (exit %s); log: %s" % (peer, p.returncode, tail(p.bench_log)))
        res["cpu_s"] = tree_cpu_seconds(p.pid) - c0
        res["rss_kib"] = tree_vm_hwm_kib(p.pid)
        if b0 is not None:
            if scen == "S6h":
                time.sleep(S6H_SLOW_MS / 1000.0 + 0.1)  # replies still sleeping are logged when done
            res["backend_reqs"] = backend_count(scen) - b0
        if scen in ("S3", "S3u"):
            res["cpu_us_per_mib"] = res["cpu_s"] * 1e6 / max(1, res["bytes"] / 1048576)
        else:
            res["cpu_us_per_req"] = res["cpu_s"] * 1e6 / max(1, res["requests"])
        # the output must still be right after the load
        if scen not in ("S3", "S3u"):
            check(peer, scen, port)
        res.pop("raw", None)
        return res
    finally:
        stop(p)
        if p.returncode not in (0, -15, None) and peer == "estuary":
            FAILURES.append("estuary exited with %s after %s; log tail:\n%s" % (p.returncode, scen, tail(p.bench_log)))


# ---------------------------------------------------------------- table
def fmt_num(x, digits=0):
    if x is None:
        return "-"
    return ("{:,.%df}" % digits).format(x)


def spread(vals):
    if len(vals) < 2 or not statistics.median(vals):
        return ""
    return " ±%.0f%%" % ((max(vals) - min(vals)) / 2 / statistics.median(vals) * 100)


def table(results):
    hdr = ["scen", "peer", "throughput (median ±half-range)", "p50 ms", "p99 ms", "errors",
           "CPU (median ±half-range)", "peak RSS MiB", "runs"]
    rows = []
    for scen in SCENARIOS:
        for peer in (["direct"] if scen in ("S3", "S3u") else []) + PEERS + \
                ([name for name, _ in S6H_VARIANTS[1:]] if scen == "S6h" else []):
            runs = results.get((scen, peer))
            if runs is None:
                continue
            if isinstance(runs, str):
                rows.append([scen, peer, "skipped: " + runs, "", "", "", "", "", ""])
                continue
            ok = [r for r in runs if isinstance(r, dict)]
            bad = [r for r in runs if not isinstance(r, dict)]
            if not ok:
                rows.append([scen, peer, "FAILED: " + bad[0][:60], "", "", "", "", "", "0/%d" % len(runs)])
                continue
            med = lambda k: statistics.median([r[k] for r in ok if r.get(k) is not None]) \
                if any(r.get(k) is not None for r in ok) else None
            if scen in ("S3", "S3u"):
                v = [r["mbps"] for r in ok]
                thr = fmt_num(statistics.median(v)) + " MB/s" + spread(v)
                cv = [r["cpu_us_per_mib"] for r in ok] if peer != "direct" else []
                cpu = (fmt_num(statistics.median(cv), 1) + " µs/MiB" + spread(cv)) if cv else "-"
            else:
                v = [r["rps"] for r in ok]
                thr = fmt_num(statistics.median(v)) + " req/s" + spread(v)
                cv = [r["cpu_us_per_req"] for r in ok]
                cpu = fmt_num(statistics.median(cv), 2) + " µs/req" + spread(cv)
            rss = max(r["rss_kib"] for r in ok) / 1024 if peer != "direct" else None
            rows.append([scen, peer, thr, fmt_num(med("p50"), 2), fmt_num(med("p99"), 2),
                         str(sum(r["errors"] for r in ok)), cpu, fmt_num(rss, 1),
                         "%d/%d" % (len(ok), len(runs))])
    w = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(len(hdr))]
    lines = ["| " + " | ".join(h.ljust(w[i]) for i, h in enumerate(hdr)) + " |",
             "|" + "|".join("-" * (x + 2) for x in w) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) + " |")
    return "\n".join(lines)


def policy_ratios(results):
    """S7/S8/S1t/S1t01 against estuary's S1 of the same run: the CPU ratio (S7 target <= 1.2) and the p50 added."""
    def med(scen, k):
        runs = [r for r in results.get((scen, "estuary"), []) if isinstance(r, dict) and r.get(k) is not None]
        return statistics.median([r[k] for r in runs]) if runs else None
    out = []
    s1_cpu, s1_p50 = med("S1", "cpu_us_per_req"), med("S1", "p50")
    for scen, target in (("S7", 1.2), ("S8", None), ("S1t", None), ("S1t01", None)):
        cpu, p50 = med(scen, "cpu_us_per_req"), med(scen, "p50")
        if scen not in SCENARIOS or cpu is None or s1_cpu is None:
            continue
        line = "%s vs S1 (estuary, same run): CPU %.2f / %.2f µs/req = %.2f ×" % (scen, cpu, s1_cpu, cpu / s1_cpu)
        if target is not None:
            line += " (target ≤ %.1f ×: %s)" % (target, "met" if cpu / s1_cpu <= target else "NOT met")
        if p50 is not None and s1_p50 is not None:
            line += "; p50 %.2f vs %.2f ms (%+.2f ms)" % (p50, s1_p50, p50 - s1_p50)
        out.append(line)
    return out


def ok_runs(results, scen, label):
    return [r for r in results.get((scen, label), []) if isinstance(r, dict)]


def cache_summary(results):
    """S6: CPU per request side by side, estuary / the better of nginx and Varnish (target
    <= 0.8), and what reached the origin during each measured window (0 = all hits)."""
    if "S6" not in SCENARIOS:
        return []
    cpu, origin = {}, []
    for peer in CACHE_PEERS:
        runs = ok_runs(results, "S6", peer)
        if runs:
            cpu[peer] = statistics.median([r["cpu_us_per_req"] for r in runs])
            origin.append("%s %s" % (peer, ",".join(str(r.get("backend_reqs")) for r in runs)))
    if not cpu:
        return []
    out = ["S6 CPU per request (median): " + " | ".join("%s %.2f µs" % (k, v) for k, v in cpu.items())]
    peers = {k: v for k, v in cpu.items() if k != "estuary"}
    if "estuary" in cpu and peers:
        best = min(peers, key=peers.get)
        ratio = cpu["estuary"] / peers[best]
        out.append("S6 estuary / best of nginx, varnish (%s): %.2f ×  (target ≤ 0.8 ×: %s)"
                   % (best, ratio, "met" if ratio <= 0.8 else "NOT met"))
    out.append("S6 origin requests during each measured window (0 = every reply a hit): " + " | ".join(origin))
    return out


def hedge_summary(results):
    """S6h: p50/p99 without and with hedging beside backend requests per client request."""
    if "S6h" not in SCENARIOS:
        return []
    out = []
    for name, _ in S6H_VARIANTS:
        runs = ok_runs(results, "S6h", name)
        if not runs:
            continue
        med = lambda k: statistics.median([r[k] for r in runs if r.get(k) is not None] or [float("nan")])
        per = statistics.median([r["backend_reqs"] / max(1, r["requests"]) for r in runs])
        out.append("  %-20s p50 %6.2f ms  p99 %7.2f ms  %7.0f req/s  backend requests (both replicas) "
                   "per client request %.3f" % (name, med("p50"), med("p99"), med("rps"), per))
    if out:
        out.insert(0, "S6h hedging (estuary only: nginx, HAProxy, h2o and Varnish have no request hedging), "
                      "medians over the rounds:")
    return out


# ---------------------------------------------------------------- profile mode
def profile(tool, scen, n):
    """estuary alone under callgrind / strace -c / perf record, fixed request count (h2load)."""
    global TMP, FILE_BYTES, FILE_SHA
    detect()
    TMP = tempfile.mkdtemp(prefix="estuary-profile.")
    FILE_BYTES, FILE_SHA = 0, ""
    os.makedirs(os.path.join(TMP, "www", "files"))
    origin = start("origin", ["nginx", "-c", origin_conf(), "-p", TMP], LOAD_CPU)
    wait_port(ORIGIN_PORT, origin)
    cmd, extra, _ = estuary_cmd()
    out = os.path.join(TMP, "%s.out" % tool)
    if tool == "callgrind":
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out] + cmd
    p = start("estuary", cmd, PROXY_CPU, extra)
    wait_port(H1_PORT, p, 60)
    check("estuary", scen, H1_PORT)
    path, conns, streams = SCEN[scen]["path"], SCEN[scen]["conns"], (H2_STREAMS if scen == "S5" else 1)

    def fixed_load(count):
        c = ["taskset", "-c", LOAD_CPU, "h2load", "-t1", "-c%d" % min(conns, count), "-m%d" % streams, "-n%d" % count]
        if scen != "S5":
            c.append("--h1")
        r = subprocess.run(c + ["http://127.0.0.1:%d%s" % (H1_PORT, path)], capture_output=True, text=True)
        m = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored", r.stdout)
        return int(m.group(1)) if m else 0, r.stdout

    fixed_load(max(200, n // 10))                       # warm the pools
    helper = None
    if tool == "callgrind":
        subprocess.run(["callgrind_control", "-z", str(p.pid)], capture_output=True)
    elif tool == "strace":
        helper = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(p.pid)], stderr=subprocess.DEVNULL)
        PROCS.append(helper)
        time.sleep(1)
    elif tool == "perf":
        helper = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-g", "-o", out, "-p", str(p.pid)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        PROCS.append(helper)
        time.sleep(1)
    c0 = cpu_seconds(p.pid)
    done, text = fixed_load(n)
    cpu = cpu_seconds(p.pid) - c0
    if tool == "callgrind":
        subprocess.run(["callgrind_control", "-d", str(p.pid)], capture_output=True)
    if helper is not None:
        helper.send_signal(signal.SIGINT)
        helper.wait(60)
        PROCS.remove(helper)
    print("estuary %s %s: %d requests ok of %d; CPU %.0f us/request%s" % (
        tool, scen, done, n, cpu * 1e6 / max(1, done), " (under the tool)" if tool != "none" else ""))
    for line in text.splitlines():
        if line.startswith(("requests:", "status codes:", "finished in")):
            print("  h2load " + line)
    if tool == "callgrind":
        stop(p, 30)
        dumps = sorted(f for f in os.listdir(TMP) if f.startswith("callgrind.out"))
        dump = os.path.join(TMP, [d for d in dumps if d != "callgrind.out"][0] if len(dumps) > 1 else dumps[0])
        a = subprocess.run(["callgrind_annotate", "--inclusive=no", dump], capture_output=True, text=True).stdout
        ai = subprocess.run(["callgrind_annotate", "--inclusive=yes", dump], capture_output=True, text=True).stdout
        tot = re.search(r"([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", a)
        if tot:
            ir = int(tot.group(1).replace(",", ""))
            print("instructions (Ir) per request: %.0f" % (ir / max(1, done)))
        print("--- self cost ---\n" + "\n".join(a.splitlines()[:60]))
        print("--- inclusive ---\n" + "\n".join(ai.splitlines()[:70]))
    elif tool == "strace":
        with open(out) as f:
            txt = f.read()
        print(txt)
        for line in txt.splitlines():
            parts = line.split()
            if len(parts) >= 5 and parts[3].isdigit():
                print("  %-16s %6.2f calls/request" % (parts[-1], int(parts[3]) / max(1, done)))
    elif tool == "perf":
        rep = subprocess.run(["perf", "report", "-i", out, "--no-children", "--sort", "dso,symbol", "--stdio", "-g", "none"],
                             capture_output=True, text=True).stdout
        print("\n".join(l for l in rep.splitlines() if l.strip() and not l.startswith("#"))[:6000])
    print("files kept in %s" % TMP)


# ---------------------------------------------------------------- main
def main():
    global TMP, FILE_BYTES, FILE_SHA, REDIS_UP
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    detect()
    for peer in PEERS:
        if peer not in PEER_DEF:
            sys.exit("unknown peer %r (known: %s)" % (peer, ", ".join(PEER_DEF)))
    for s in SCENARIOS:
        if s not in SCEN:
            sys.exit("unknown scenario %r" % s)
    if not HAVE["estuary"] and "estuary" in PEERS:
        sys.exit("estuary binary not found: %s" % ESTUARY_BIN)
    if not HAVE["nginx"]:
        sys.exit("nginx is needed for the origin and is not installed")
    for port in (ORIGIN_PORT, H1_PORT, H2_PORT, SINK_PORT):
        if not port_free(port):
            sys.exit("port %d on 127.0.0.1 is in use (set BENCH_PORT)" % port)

    TMP = tempfile.mkdtemp(prefix="estuary-bench.")
    try:
        # the file for S3: sparse, with an 8-byte offset stamp every MiB so that a reordered,
        # duplicated or truncated stream is caught by the checksum
        os.makedirs(os.path.join(TMP, "www", "files"))
        FILE_BYTES = FILE_MIB * 1048576
        fpath = os.path.join(TMP, "www", "files", "big.bin")
        with open(fpath, "wb") as f:
            f.truncate(FILE_BYTES)
            for off in range(0, FILE_BYTES, 1048576):
                f.seek(off)
                f.write(off.to_bytes(8, "little"))
        h = hashlib.sha256()
        with open(fpath, "rb") as f:
            for b in iter(lambda: f.read(1 << 22), b""):
                h.update(b)
        FILE_SHA = h.hexdigest()

        origin = start("origin", ["nginx", "-c", origin_conf(), "-p", TMP], LOAD_CPU)
        wait_port(ORIGIN_PORT, origin)
        for st, _, body in http_get(ORIGIN_PORT, "/users/1", 2) + http_get(ORIGIN_PORT, "/orders/2", 1):
            if st != 200 or body not in (USERS_BODY, ORDERS_BODY):
                sys.exit("origin does not answer as expected: %s %r" % (st, body))

        if "S7" in SCENARIOS:
            make_bearer()
        if "S8" in SCENARIOS and HAVE["redis"]:
            if not port_free(REDIS_PORT):
                sys.exit("port %d on 127.0.0.1 is in use (set BENCH_PORT)" % REDIS_PORT)
            redis = start("redis", ["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no"], LOAD_CPU)
            wait_port(REDIS_PORT, redis)
            REDIS_UP = True
        if "S6h" in SCENARIOS and HAVE["nginx_lua"]:
            for port in (REPLICA_A_PORT, REPLICA_B_PORT):
                if not port_free(port):
                    sys.exit("port %d on 127.0.0.1 is in use (set BENCH_PORT)" % port)
            replicas = start("replicas", ["nginx", "-c", replicas_conf(), "-p", TMP], LOAD_CPU)
            wait_port(REPLICA_A_PORT, replicas)
            wait_port(REPLICA_B_PORT, replicas)
        if "S3u" in SCENARIOS:
            sink = start("sink", [sys.executable, os.path.join(HERE, "upload_sink.py"), str(SINK_PORT)], LOAD_CPU)
            wait_port(SINK_PORT, sink)

        log("estuary bench: %s; peers %s; scenarios %s; %d round(s) x %.3gs (warm-up %.3gs); "
            "proxy on CPU %s, load+origin on CPU %s; tmp %s"
            % ("SMOKE" if SMOKE else "full", ",".join(PEERS), ",".join(SCENARIOS), ROUNDS, DURATION,
               WARMUP, PROXY_CPU, LOAD_CPU, TMP))
        results = {}
        for scen in SCENARIOS:
            for peer in PEERS:
                ok, why = peer_supports(peer, scen)
                if not ok and why is not None:
                    results[(scen, peer)] = why
        t_start = time.time()
        for rnd in range(1, ROUNDS + 1):
            for scen in SCENARIOS:
                if scen == "S3":   # reference: straight from the origin
                    try:
                        check("direct", "S3", ORIGIN_PORT)
                        results.setdefault(("S3", "direct"), []).append(
                            dict(run_curl(ORIGIN_PORT, SCEN["S3"]["path"], S3_DOWNLOADS), rss_kib=0))
                    except Exception as e:      # noqa
                        results.setdefault(("S3", "direct"), []).append("direct: %s" % e)
                if scen == "S3u":  # reference: straight to the upload origin
                    try:
                        check("direct", "S3u", SINK_PORT)
                        results.setdefault(("S3u", "direct"), []).append(
                            dict(run_curl_upload(SINK_PORT, SCEN["S3u"]["path"], S3_DOWNLOADS), rss_kib=0))
                    except Exception as e:      # noqa
                        results.setdefault(("S3u", "direct"), []).append("direct: %s" % e)
                runs = []
                for peer in PEERS:
                    if isinstance(results.get((scen, peer)), str) or not peer_supports(peer, scen)[0]:
                        continue
                    if scen == "S6h":   # estuary without, then with hedging: one row each
                        runs += [(name, peer, hedge) for name, hedge in S6H_VARIANTS]
                    else:
                        runs.append((peer, peer, None))
                for label, peer, hedge in runs:
                    t0 = time.time()
                    try:
                        res = one_run(peer, scen, hedge)
                        log("round %d %s %-8s %s" % (rnd, scen, label, " ".join(
                            "%s=%s" % (k, ("%.4g" % v) if isinstance(v, float) else v) for k, v in res.items())))
                    except Exception as e:      # noqa
                        res = "%s" % e
                        log("round %d %s %-8s FAILED (%.1fs): %s" % (rnd, scen, label, time.time() - t0, e))
                        if peer == "estuary":
                            FAILURES.append("round %d %s %s: %s" % (rnd, scen, label, e))
                    results.setdefault((scen, label), []).append(res)
                    if peer == "estuary" and isinstance(res, dict) and res["errors"]:
                        FAILURES.append("round %d %s %s: %d errors under load (%s) of %d requests"
                                        % (rnd, scen, label, res["errors"], res.get("error_detail", "?"),
                                           res["requests"]))
                    if scen == "S6" and isinstance(res, dict) and res.get("backend_reqs"):
                        msg = ("round %d S6 %s: the origin got %d requests in the measured window "
                               "(not all hits)" % (rnd, label, res["backend_reqs"]))
                        if peer == "estuary":
                            FAILURES.append(msg)
                        else:
                            NOTES.append(msg)
        elapsed = time.time() - t_start

        print()
        print("estuary benchmark — %s, %d round(s), %.3gs per run, proxy pinned to CPU %s (1 worker), "
              "load generator + origin nginx on CPU %s" % ("smoke" if SMOKE else "full", ROUNDS, DURATION,
                                                            PROXY_CPU, LOAD_CPU))
        for s in SCENARIOS:
            print("  %s: %s" % (s, SCEN[s]["desc"]))
        print()
        print(table(results))
        print()
        for line in policy_ratios(results):
            print(line)
        for line in cache_summary(results) + hedge_summary(results):
            print(line)
        print("CPU = utime+stime of the proxy's processes (/proc/PID/stat, the process and its children: Varnish's manager + child) during the measured run ÷ requests "
              "(S3, S3u: ÷ MiB sent); peak RSS = VmHWM (summed over those processes); p50/p99 from wrk --latency / h2load --log-file "
              "(S3, S3u: median/max transfer time, ms). Harness time %.0fs." % elapsed)
        for n in NOTES:
            print("note: " + n)
        if OUT_JSON:
            with open(OUT_JSON, "w") as f:
                json.dump({"%s/%s" % k: v for k, v in results.items()}, f, indent=1)
        if FAILURES:
            print("\nESTUARY FAILURES:")
            for f_ in FAILURES:
                print("  - " + f_)
            return 1
        return 0
    finally:
        stop_all()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--profile":
        # bench.py --profile callgrind|strace|perf|none S1|S2|S5 [REQUESTS]
        KEEP = True
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        try:
            profile(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 20000)
        finally:
            stop_all()
        sys.exit(0)
    sys.exit(main())
