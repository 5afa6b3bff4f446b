#!/usr/bin/env python3
"""The driver of Scripts/bench: runs every benchmark, each figure beside its floor (and, for latency and
CPU, beside baresip measured in the same run), and writes bench/results.json, bench/summary.md and PNG plots.

    bench.py all OUTDIR          loopback parts here, then the NAT-lab parts through Scripts/natlab run
    bench.py lab OUTDIR/lab.json (inside Scripts/natlab run) join times, PESQ and audio gaps across real NATs
    bench.py lab-gaps DIR        (inside Scripts/natlab run) only the audio gaps
    bench.py lab-relay DIR       (inside Scripts/with-pulseaudio Scripts/natlab run) only the relay's cost
    bench.py lab-uplink DIR [FLAG...]  (the same) only a member's capped uplink; FLAGs go to its parleyd
    bench.py lab-probe DIR       (the same) what a failed probe for a copy per peer costs (not in `all`: ~4 min)
    bench.py sixteen DIR         only the 16-node meeting (loopback)
    bench.py ab-meeting TREE N IN  (Scripts/bench-ab) one loopback meeting started by TREE's bench.py

Run it through Scripts/bench, which builds the release executables and provides PulseAudio and the venv.
Numbers are printed and recorded, never asserted (docs/DEVELOPING.md, "Numbers").
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import numpy

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "Interop" / "tests"), str(ROOT / "Interop" / "python-peer")]
from harness import ControlClient, Process, start_rendezvous, wait_until  # noqa: E402

RATE = 48000
HARVARD = ("The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
           "It is easy to tell the depth of a well. These days a chicken leg is a rare dish.")


def log(message: str) -> None:
    print(message, flush=True)


def run(args: list, timeout: float = 600, env: dict | None = None) -> str:
    """Runs a command, returns its stdout (stderr passes through); raises on failure."""
    result = subprocess.run([str(a) for a in args], stdout=subprocess.PIPE, text=True, timeout=timeout,
                            env=env, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({result.returncode}):\n{result.stdout[-3000:]}")
    return result.stdout


def number(pattern: str, text: str, group: int = 1) -> float | None:
    match = re.search(pattern, text)
    return float(match.group(group)) if match else None


def write_wav(path: Path, samples: numpy.ndarray) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(RATE)
        f.writeframes(numpy.clip(samples * 32767, -32768, 32767).astype("<i2").tobytes())


def read_wav(path: Path) -> tuple[numpy.ndarray, int, int]:
    with wave.open(str(path), "rb") as f:
        data = numpy.frombuffer(f.readframes(f.getnframes()), dtype="<i2").astype(numpy.float64) / 32768
        return data.reshape(-1, f.getnchannels()), f.getframerate(), f.getnchannels()


# MARK: nodes


class Node:
    """A release `parleyd` started without a meeting, then joined through its control socket, so join time
    excludes process start-up. `prefix` runs it in a namespace (ip netns exec)."""

    def __init__(self, directory: Path, name: str, audio_in: str, audio_out: str = "null", frame_ms: int = 20,
                 local_addresses: tuple[str, ...] = ("127.0.0.1",), prefix: list | None = None, extra=()):
        self.name = name
        self.socket = directory / f"{name}.sock"
        arguments = [bin_path("parleyd"), "--socket", self.socket, "--state-dir", directory / f"{name}-state",
                     "--name", name, "--audio-in", audio_in, "--audio-out", audio_out, "--frame-ms", str(frame_ms),
                     "--log-level", os.environ.get("PARLEY_BENCH_LOG_LEVEL", "warning"), *extra]
        for address in local_addresses:
            arguments += ["--local-address", address]
        self.process = Process(arguments, directory, name, prefix=prefix)
        self.control = ControlClient(self.socket)
        self.up: dict[str, float] = {}  # peer -> monotonic time its link went up
        self.lock = threading.Lock()

    def ready(self, timeout: float = 20) -> None:
        wait_until(lambda: self.control.answers() or self.process.process.poll() is not None, timeout,
                   f"{self.name}'s control socket")
        if self.process.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited:\n{self.process.stderr()[-3000:]}")

    def watch(self) -> None:
        def on_event(at: float, event: dict) -> None:
            if event.get("kind") == "link" and event.get("state") == "up" and event.get("peer"):
                with self.lock:
                    self.up.setdefault(event["peer"], at)

        self.control.watch(on_event)

    def peers_up(self) -> int:
        with self.lock:
            return len(self.up)

    def status(self) -> dict:
        return self.control.request("status")["status"]

    def stop(self) -> None:
        self.process.stop(grace=15)


def bin_path(name: str) -> Path:
    return Path(os.environ["PARLEY_BIN"]) / name


def meeting(directory: Path, count: int, invite: str, prefix_for=lambda i: None, local_for=lambda i: ("127.0.0.1",),
            audio_in_for=lambda i: f"tone:{300 + 100 * i}", frame_ms: int = 20, timeout: float = 60,
            extra=()) -> tuple:
    """Starts `count` nodes, joins them all at once, and returns (nodes, join seconds per node)."""
    nodes = [Node(directory, f"n{i}", audio_in_for(i), frame_ms=frame_ms, prefix=prefix_for(i),
                  local_addresses=local_for(i), extra=extra) for i in range(count)]
    try:
        for node in nodes:
            node.ready()
            node.watch()
        started = time.monotonic()
        threads = [threading.Thread(target=node.control.request, args=("join",), kwargs={"invite": invite})
                   for node in nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wait_until(lambda: all(node.peers_up() >= count - 1 for node in nodes), timeout,
                   f"{count} nodes to connect", interval=0.01)
        joins = [max(node.up.values()) - started for node in nodes]
        return nodes, joins
    except BaseException:
        for node in nodes:
            node.stop()
        raise


# MARK: loopback parts


def existing_benchmarks(results: dict) -> None:
    """Per-area benchmarks, reused: the ICE floor (plain libnice), codec CPU and latency floors, crypto."""
    log("== floors from the per-area benchmarks (Scripts/bench-ice, bench-audio, bench-crypto)")
    ice = run(["Scripts/bench-ice"], env=dict(os.environ, RUNS="5"))
    floor_binary = ROOT / ".build" / "bench" / "nice-floor"
    floors = {}
    for nodes in (2, 4, 8):
        text = run([floor_binary, str(nodes), "5"])
        floors[nodes] = number(r"median ([0-9.]+) ms", text)
    results["ice_floor_ms"] = floors
    results["ice_module_ms"] = {n: number(rf"Parley ICE, exchange → connected: {n} nodes.*?median ([0-9.]+) ms", ice)
                                for n in (2, 8)}
    log(ice.strip())
    results["codec_cpu_us"] = codec_cpu_us()
    audio_latency = run(["Scripts/bench-audio", "latency"])
    results["pipeline_latency_ms"] = number(r"mean ([0-9.]+) ms", audio_latency)
    log(audio_latency.strip())
    codec_latency_floor(results)
    results["crypto"] = run(["Scripts/bench-crypto"]).strip()
    log(results["crypto"])
    mesh_floor(results)


def mesh_floor(results: dict) -> None:
    """What a full-mesh node's datagrams and device wake-ups cost this machine with no codec, crypto, ICE
    library or Parley code (Scripts/mesh-floor.c): added to the codec floor, it is the CPU floor of a node."""
    binary = ROOT / ".build" / "bench" / "mesh-floor"
    binary.parent.mkdir(parents=True, exist_ok=True)
    compiler = shutil.which("clang") or shutil.which("cc")
    run([compiler, "-O2", "-Wall", "-o", binary, ROOT / "Scripts" / "mesh-floor.c", "-lpthread"])
    results["mesh_floor_pct"] = {}
    for count in (2, 4, 8, 16):
        text = run([binary, str(count), "8"])
        results["mesh_floor_pct"][count] = number(r"CPU per node mean ([0-9.]+) %", text)
        log(text.strip())


def mesh_floor_pct(results: dict, count: int) -> float | None:
    """The mesh floor of `count` nodes, from this run or a results.json read back (keys become strings)."""
    floors = results.get("mesh_floor_pct") or {}
    return floors.get(count, floors.get(str(count)))


def cpu_floors(results: dict, count: int, signal: str = "tone") -> str:
    """The CPU floor column of a node in a `count`-node meeting with everyone sending `signal`: the codec's
    work done at once and in real time (see `codec_cpu_us`), alone and with a bare mesh's."""
    codec = codec_cpu_floor(results, count, signal)
    realtime = codec_cpu_floor(results, count, signal, realtime=True)
    mesh = mesh_floor_pct(results, count)
    text = f"codec only {codec:.2f} % ({realtime:.2f} in real time)"
    if mesh is not None:
        text += f"; codec + mesh {codec + mesh:.2f} % ({realtime + mesh:.2f} in real time)"
    return text


def codec_latency_floor(results: dict) -> None:
    """Frame + Opus lookahead + one frame of playout: what the codec alone costs a click, per frame size."""
    import opuslib

    encoder = opuslib.Encoder(RATE, 1, opuslib.APPLICATION_VOIP)
    results["opus_lookahead_ms"] = encoder.lookahead / RATE * 1000
    results["codec_latency_floor_ms"] = {f: f + results["opus_lookahead_ms"] + f for f in (10, 20)}


def codec_cpu_us() -> dict:
    """One Opus encode and 7 decodes + mix per 20 ms frame, µs (Scripts/bench-audio cpu), on each input the
    meetings here code: "tone" (the loopback and 16-node meetings' tones) and "speech" (the 1:1 call's).
    Opus's cost depends on the input (speech costs half again a tone's), so each meeting's floor is its own
    input's. Each is measured twice: frames one after another ("encode", "decode7_mix"), and one every 20 ms
    with the thread asleep between them, as a meeting codes them ("realtime_…"), which on this machine costs
    about 30–40 % more (the coder's state and tables are out of the caches when it wakes)."""
    text = run(["Scripts/bench-audio", "cpu"])
    log(text.strip())

    def coded(part: str, prefix: str) -> dict:
        return {prefix + "encode": number(r"encode once:\s+([0-9.]+)", part),
                prefix + "decode7_mix": number(r"7 decodes \+ mix:\s+([0-9.]+)", part)}

    figures = {}
    for name, label in (("tone", "the meeting benchmarks' tones"), ("speech", "speech")):
        at_once, realtime = text.split(f"frames of {label}", 1)[1].split("in real time", 1)
        figures[name] = coded(at_once, "") | coded(realtime, "realtime_")
    return figures


def codec_cpu_floor(results: dict, count: int, signal: str = "tone", realtime: bool = False) -> float:
    """% of one core for one encode and (count - 1) decodes + mix per 20 ms frame of `signal` (bench-audio's
    figures), coded at once or in real time."""
    cpu = results["codec_cpu_us"][signal]
    prefix = "realtime_" if realtime else ""
    return frame_cost_pct(cpu[prefix + "encode"] + cpu[prefix + "decode7_mix"] * (count - 1) / 7)


def frame_cost_pct(microseconds: float) -> float:
    """% of one core that `microseconds` of work every 20 ms frame is."""
    return microseconds / 20000 * 100


def loopback_meetings(results: dict, work: Path) -> None:
    log("== loopback meetings: join time, CPU and bandwidth per node (2, 4, 8 nodes)")
    rendezvous = start_rendezvous(work, "--stun-listen", "127.0.0.1:0", name="rendezvous-loopback")
    try:
        for count in (2, 4, 8):
            directory = work / f"loopback-{count}"
            directory.mkdir(mode=0o700)  # holds control sockets: parleyd wants it private
            invite = new_invite(rendezvous.url)
            nodes, joins = meeting(directory, count, invite)
            try:
                cpu, threads = settled_cpu(nodes, 8.0)
                statuses = [node.status() for node in nodes]
            finally:
                for node in nodes:
                    node.stop()
            tx = [sum(p["tx_kbps"] for p in s["peers"]) for s in statuses]
            rx = [sum(p["rx_kbps"] for p in s["peers"]) for s in statuses]
            entry = {
                "join_ms": {"max": 1000 * max(joins), "median": 1000 * statistics.median(joins)},
                "join_floor_ms": results["ice_floor_ms"][count],
                "cpu_pct": {"mean": statistics.mean(cpu), "max": max(cpu)},
                "threads_pct": threads,
                "cpu_floor_pct": codec_cpu_floor(results, count),
                "tx_kbps": statistics.mean(tx), "rx_kbps": statistics.mean(rx),
                "bandwidth_floor_kbps": 32 * (count - 1),
            }
            results.setdefault("loopback", {})[count] = entry
            log(f"  {count} nodes: join {entry['join_ms']['max']:.0f} ms (libnice floor "
                f"{entry['join_floor_ms']:.0f} ms); CPU {entry['cpu_pct']['mean']:.1f} % of a core per node "
                f"(codec floor {entry['cpu_floor_pct']:.2f} %); sends {entry['tx_kbps']:.0f} kb/s, receives "
                f"{entry['rx_kbps']:.0f} kb/s per node (Opus payload floor {entry['bandwidth_floor_kbps']} kb/s)")
    finally:
        rendezvous.process.stop()


# How long a meeting's CPU is left to settle before it is measured: past a join's work and a link's
# first words' copies.
SETTLE_SECONDS = 2.0


def settled_cpu(nodes: list, window: float) -> tuple[list[float], dict]:
    """% of one core of each node over `window` seconds after SETTLE_SECONDS, and the nodes' mean by
    thread (see `threads_cpu_pct`)."""
    time.sleep(SETTLE_SECONDS)
    return threads_cpu_pct([node.process.process.pid for node in nodes], window, parley_thread_group)


def thread_cpu_seconds(pid: int) -> dict:
    """CPU seconds each thread of a process has run, by thread id: (name, seconds), from the scheduler's
    nanosecond count (/proc/PID/task/TID/schedstat), not /proc/PID/stat's 10-ms ticks, which over an 8-s
    window of a 3 % process are a 4 % step. A thread that ends between two readings loses its time, so
    this is for long-lived threads (a daemon's audio and network threads, baresip's)."""
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            nanoseconds = int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # ended while listed
        threads[int(task.name)] = (name, nanoseconds / 1e9)
    return threads


def threads_cpu_pct(pids: list, window: float, group) -> tuple[list[float], dict]:
    """% of one core each process used over `window` seconds (sum of its threads), and the mean per
    process of each thread group (`group(pid, tid, name)` names it)."""
    before = [thread_cpu_seconds(pid) for pid in pids]
    time.sleep(window)
    after = [thread_cpu_seconds(pid) for pid in pids]
    totals, groups = [], {}
    for pid, old, new in zip(pids, before, after):
        total = 0.0
        for tid, (name, seconds) in new.items():
            used = 100 * (seconds - old.get(tid, (name, 0.0))[1]) / window
            total += used
            key = group(pid, tid, name)
            groups[key] = groups.get(key, 0.0) + used / len(pids)
        totals.append(total)
    return totals, groups


def parley_thread_group(pid: int, tid: int, name: str) -> str:
    """parleyd's capture thread reads, encodes, seals and sends; its playback thread decodes, mixes and
    plays; its network thread (libnice's loop) receives and opens."""
    return {"parley-capture": "capture", "parley-playback": "playback", "parley-ice": "network"}.get(name, "other")


def baresip_thread_group(pid: int, tid: int, name: str) -> str:
    """baresip's main thread polls its sockets and decodes; its other thread (aufile's source) reads the
    file, encodes and sends."""
    return "main (receive, decode)" if tid == pid else "others (read, encode, send)"


def one_to_one_cpu(results: dict, work: Path, rounds: int = 4, window: float = 10.0) -> None:
    """A 1:1 call against baresip's, both ends of both saying the same espeak-ng speech the whole time, the
    two taken in turn `rounds` times (a shared VM's speed drifts within minutes). Speech, not a tone:
    Opus codes a tone as music (CELT alone, a third of the work) unless told it is voice, as Parley tells
    it, so a tone would compare two different codings; on speech both code SILK + CELT at the same cost
    (complexity 10, 32 kb/s). Parley runs with --no-dtx, as baresip has no DTX: equal encodes per second.
    CPU is the threads' nanosecond counts, with each program's split by thread: where the difference is."""
    log("== 1:1 call, Parley and baresip in turn, both sending speech: CPU per process")
    directory = work / "one-to-one"
    directory.mkdir(mode=0o700)  # holds control sockets: parleyd wants it private
    speech = directory / "speech.wav"  # without make_speech's silent lead-in: no pause for DTX to skip
    write_wav(speech, make_speech(directory)["reference"])
    looped = directory / "speech-looped.wav"
    run(["sox", speech, looped, "repeat", str(int(3 * window / 10) + 2)])
    rendezvous = start_rendezvous(directory, "--stun-listen", "127.0.0.1:0", name="rendezvous-one-to-one")
    parley, baresip, parley_threads, baresip_threads = [], [], [], []
    try:
        for round_ in range(rounds):
            meeting_directory = directory / f"parley-{round_}"
            meeting_directory.mkdir(mode=0o700)
            nodes, _ = meeting(meeting_directory, 2, new_invite(rendezvous.url),
                               audio_in_for=lambda i: f"wav:{looped}", extra=("--no-dtx",))
            try:
                time.sleep(SETTLE_SECONDS)
                totals, groups = threads_cpu_pct([node.process.process.pid for node in nodes], window,
                                                 parley_thread_group)
            finally:
                for node in nodes:
                    node.stop()
            parley.append(statistics.mean(totals))
            parley_threads.append(groups)
            totals, groups = baresip_call_retried(directory / f"baresip-{round_}", window, looped)
            baresip.append(statistics.mean(totals))
            baresip_threads.append(groups)
            log(f"  round {round_ + 1}: Parley {parley[-1]:.2f} % ({thread_split(parley_threads[-1])}), "
                f"baresip {baresip[-1]:.2f} % ({thread_split(baresip_threads[-1])}) of a core per process")
    finally:
        rendezvous.process.stop()
    results["one_to_one"] = {"parley_pct": parley, "baresip_pct": baresip, "floor_pct": codec_cpu_floor(results, 2, "speech"),
                             "parley_threads_pct": median_split(parley_threads),
                             "baresip_threads_pct": median_split(baresip_threads)}


def median_split(rounds: list[dict]) -> dict:
    """Each thread group's median over the rounds (a group missing from a round counts 0 there)."""
    keys = {key for split in rounds for key in split}
    return {key: statistics.median(split.get(key, 0.0) for split in rounds) for key in keys}


def thread_split(split: dict) -> str:
    return ", ".join(f"{key} {value:.2f}" for key, value in sorted(split.items(), key=lambda item: -item[1]))


def meeting_benchmark(results: dict) -> None:
    """An 8-node meeting where people take turns (DTX on, as by default), and an 8th node joining it while it
    runs: Scripts/bench-node, shortened to 3 joins."""
    log("== an 8-node meeting, one talker at a time (Scripts/bench-node --joins 3)")
    text = run(["Scripts/bench-node", "--input", "conversation", "--joins", "3", "--window", "20"], timeout=600)
    log(text.strip())
    results["meeting"] = {
        "join_ms": number(r"join time .*?median ([0-9.]+) ms", text),
        "cpu_pct": {"mean": number(r"CPU per node: mean ([0-9.]+) %", text),
                    "max": number(r"CPU per node: .*?max ([0-9.]+) %", text)},
        "tx_kbps": 8 * (number(r"traffic per node: up ([0-9.]+) kB/s", text) or 0),
        "rx_kbps": 8 * (number(r"traffic per node: .*?down ([0-9.]+) kB/s", text) or 0),
    }


def sixteen_benchmark(results: dict) -> None:
    """A 16-node meeting on loopback (issue 17, part 3): everyone sending a tone of their own the whole time,
    with who heard whom in 1-s blocks; then turn-taking, one full cycle of turns (2.5 s each); the 16th node's
    join into each, from its process start."""
    log("== a 16-node meeting: everyone sending all the time (who heard whom), then one talker at a time")
    stress = run(["Scripts/bench-node", "--input", "tone", "--nodes", "16", "--hearing", "--joins", "3",
                  "--window", "20"], timeout=900)
    log(stress.strip())
    turns = run(["Scripts/bench-node", "--input", "conversation", "--nodes", "16", "--joins", "3", "--window", "40"],
                timeout=900)
    log(turns.strip())

    def figures(text: str) -> dict:
        return {
            "join_ms": {"median": number(r"join time .*?median ([0-9.]+) ms", text),
                        "max": number(r"join time .*?max ([0-9.]+) ms", text)},
            "cpu_pct": {"mean": number(r"CPU per node: mean ([0-9.]+) %", text),
                        "max": number(r"CPU per node: .*?max ([0-9.]+) %", text)},
            "tx_kbps": 8 * (number(r"traffic per node: up ([0-9.]+) kB/s", text) or 0),
            "rx_kbps": 8 * (number(r"traffic per node: .*?down ([0-9.]+) kB/s", text) or 0),
        }

    results["sixteen"] = {
        "all_sending": dict(figures(stress), pairs_heard=number(r"pairs heard in .*?: ([0-9]+) of", stress),
                            pairs=number(r"pairs heard in .*?: [0-9]+ of ([0-9]+)", stress),
                            cpu_floor_pct=codec_cpu_floor(results, 16)),
        "turns": figures(turns),
    }


def new_invite(url: str) -> str:
    from parley_peer.invite import Invite, RendezvousURL

    return Invite(os.urandom(32), RendezvousURL.parse(url.rstrip("/"))).text()


# MARK: mouth-to-ear latency on one clock


def pulse(*args: str) -> str:
    return run(["pactl", *args], timeout=20)


def make_probe() -> None:
    """A stereo null sink whose two channels are the sender's microphone (left) and the receiver's speaker
    (right): one recording of its monitor shows both on one clock. Loaded once per sound server."""
    if "probe_left_src" in pulse("list", "short", "sources"):
        return
    pulse("load-module", "module-null-sink", "sink_name=probe", "rate=48000", "channels=2",
          "channel_map=front-left,front-right")
    for side in ("left", "right"):
        pulse("load-module", "module-remap-sink", f"sink_name=probe_{side}", "master=probe", "channels=1",
              "channel_map=mono", f"master_channel_map=front-{side}", "remix=no")
    pulse("load-module", "module-remap-source", "source_name=probe_left_src", "master=probe.monitor", "channels=1",
          "channel_map=mono", "master_channel_map=front-left", "remix=no")


def click_train(path: Path, clicks: int = 6, spacing: float = 1.0) -> None:
    """20 ms tone bursts (1.5 kHz, Hann window): speech-like enough to pass noise suppression."""
    t = numpy.arange(int(0.02 * RATE)) / RATE
    burst = 0.5 * numpy.sin(2 * numpy.pi * 1500 * t) * numpy.hanning(len(t))
    samples = numpy.zeros(int((0.5 + clicks * spacing) * RATE))
    for k in range(clicks):
        start = int((0.5 + k * spacing) * RATE)
        samples[start : start + len(t)] += burst
    write_wav(path, samples)


def onsets(channel: numpy.ndarray, spacing: int) -> list[int]:
    envelope = numpy.abs(channel)
    if envelope.max() <= 0:
        return []
    found: list[int] = []
    for index in numpy.flatnonzero(envelope > 0.3 * envelope.max()):
        if not found or index - found[-1] > spacing // 2:
            found.append(int(index))
    return found


def probe_latency(work: Path, name: str, start_call, stop_call) -> float | None:
    """Starts a call, measures it with `probe_clicks`, and stops it."""
    try:
        start_call()
        return probe_clicks(work, name)
    finally:
        stop_call()


def probe_clicks(work: Path, name: str) -> float | None:
    """Plays clicks into the left channel while a running call carries them to the right one, and returns the
    median delay between the two, in ms."""
    clicks = work / "clicks.wav"
    if not clicks.exists():
        click_train(clicks)
    recording = work / f"probe-{name}.wav"
    recorder = Process(["parecord", "-d", "probe.monitor", "--channels=2", "--rate=48000", "--format=s16le",
                        "--file-format=wav", recording], work, f"parecord-{name}")
    try:
        run(["paplay", "-d", "probe_left", clicks], timeout=30)
        time.sleep(1.0)  # the last click's trip through the call (at most a few hundred ms)
    finally:
        recorder.stop(signal.SIGINT)
    data, rate, _ = read_wav(recording)
    left, right = onsets(data[:, 0], rate), onsets(data[:, 1], rate)
    delays = [(r - l) / rate * 1000 for l in left for r in right if 0 < r - l < rate // 2]
    return statistics.median(delays) if delays else None


LATENCY_ROUNDS = 3


def latency(results: dict, work: Path) -> None:
    """Mouth-to-ear at 10 and 20 ms frames and the device floor, in LATENCY_ROUNDS rounds taken in turn (the
    floor, then a call per frame size): each figure is the median of its rounds. One round of each is not a
    fair comparison: how much PulseAudio's playback buffer holds depends on where in its period a stream
    starts, and it moved the floor alone from 12 to 23 ms between runs (the call's own playback queue moves
    alike, independently)."""
    log("== mouth-to-ear latency on one clock (PulseAudio probe: sender's microphone and receiver's speaker "
        "recorded as one stereo stream)")
    make_probe()
    loop_binary = device_loop_binary()
    rendezvous = start_rendezvous(work, name="rendezvous-latency")
    floors: list = []
    calls: dict = {10: [], 20: []}
    budgets: dict = {10: [], 20: []}
    try:
        for round_index in range(LATENCY_ROUNDS):
            floors.append(device_floor(work / f"device-floor-{round_index}", loop_binary))
            log(f"  round {round_index + 1}: device floor (capture → playback, nothing between) "
                f"{shown_ms(floors[-1])}")
            for frame in (10, 20):
                figure, budget = parley_call_latency(work / f"latency-{frame}-{round_index}", rendezvous, frame)
                calls[frame].append(figure)
                budgets[frame].append(budget)
                log(f"  round {round_index + 1}, {frame} ms frames: Parley {shown_ms(figure)}")
                log("    budget from the daemons' status: " + ", ".join(
                    f"{stage} {value:.1f}" for stage, value in budget.items() if value is not None) + " ms")
    finally:
        rendezvous.process.stop()
    def median(values: list) -> float | None:  # one of the rounds' own figures (a round may have heard no click)
        measured = [value for value in values if value is not None]
        return statistics.median_low(measured) if measured else None

    results["device_floor_ms"] = {frame: median(floors) for frame in calls}  # one floor for both: see device_floor
    results["latency_ms"] = {frame: median(values) for frame, values in calls.items()}
    results["latency_rounds_ms"] = {frame: {"parley": calls[frame], "device_floor": floors} for frame in calls}
    # The budget of the round whose call was the median one.
    results["latency_budget_ms"] = {frame: budgets[frame][calls[frame].index(results["latency_ms"][frame])]
                                    for frame in calls if results["latency_ms"][frame] is not None}
    for frame in (10, 20):
        floor = results["device_floor_ms"][frame]
        log(f"  Parley, {frame} ms frames: {shown_ms(results['latency_ms'][frame])} (median of {LATENCY_ROUNDS}; "
            f"codec floor {results['codec_latency_floor_ms'][frame]:.1f} ms, device floor {shown_ms(floor)}"
            + (f", target ≤ {latency_target(results, frame):.1f} ms)" if floor is not None else ")"))
    results["baresip_latency_ms"] = baresip_call(work / "baresip-latency", probe=True)
    log(f"  baresip 1.0 (Opus 20 ms, ALSA → PulseAudio): {results['baresip_latency_ms']:.1f} ms")


def shown_ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} ms"


def parley_call_latency(directory: Path, rendezvous, frame: int) -> tuple:
    """One sender → receiver call at `frame` ms: its mouth-to-ear (`probe_clicks`) and the daemons' budget."""
    directory.mkdir(mode=0o700)  # holds control sockets: parleyd wants it private
    invite = new_invite(rendezvous.url)
    nodes = []
    budget: dict = {}

    def start():
        sender = Node(directory, "sender", "pulse:probe_left_src", "null", frame_ms=frame)
        receiver = Node(directory, "receiver", "silence", "pulse:probe_right", frame_ms=frame)
        nodes.extend([sender, receiver])
        for node in nodes:
            node.ready()
            node.watch()
        for node in nodes:
            node.control.request("join", invite=invite)
        wait_until(lambda: all(node.peers_up() for node in nodes), 30, "the latency call")
        settle(directory)

    def stop():
        try:
            budget.update(latency_budget(*nodes))
        finally:
            for node in nodes:
                node.stop()

    figure = probe_latency(directory, f"parley-{frame}", start, stop)
    return figure, budget


def settle(directory: Path) -> None:
    """Brings a new call to the steady state of a clean link before it is measured: 4 s of clicks every 100 ms
    (no DTX pause between them) let the receiver measure its first second of media, so the sender drops the
    copy it sends with a link's first words (docs/PROTOCOL.md §9.3) and the receiver's jitter buffer lets go
    of the frame it kept for it (released at 20 ms/s)."""
    warmup = directory / "warm-up.wav"
    click_train(warmup, clicks=40, spacing=0.1)
    run(["paplay", "-d", "probe_left", warmup], timeout=30)
    time.sleep(2.0)


def latency_target(results: dict, frame: int) -> float:
    """Issue 17's target: the device floor + frame + Opus lookahead + one frame + 5 ms."""
    return results["device_floor_ms"][frame] + results["codec_latency_floor_ms"][frame] + 5


def latency_budget(sender: Node, receiver: Node) -> dict:
    """Where a click spends its time, from the two daemons' status: the sender's stages up to the network
    (node "latency_ms") and the receiver's from the network on (its peer's "latency_ms")."""
    send = sender.status()["self"]["latency_ms"]
    receive = receiver.status()["peers"][0]["latency_ms"]
    stages = {"capture queue": send["capture"], "frame": send["frame"], "lookahead": send["lookahead"],
              "noise suppressor": send["denoise"], "process": send["process"], "send": send["send"], "network": receive["network"],
              "jitter buffer": receive["jitter_buffer"], "(its target)": receive["jitter_target"],
              "mix": receive["mix"], "playback queue": receive["playback"]}
    stages["sum"] = send["total"] + receive["total"]
    return stages


def device_loop_binary() -> Path:
    """`parley-audio-bench`, whose `device-loop` opens the streams Parley's engine opens."""
    run(["swift", "build", "-c", "release", "--product", "parley-audio-bench"], timeout=900)
    return Path(run(["swift", "build", "-c", "release", "--show-bin-path"]).strip()) / "parley-audio-bench"


def device_floor(directory: Path, loop_binary: Path) -> float | None:
    """The same clicks through the same PulseAudio source and sink with no Parley in between: one thread reads
    10 ms and writes it at once, through the streams Parley's engine opens (`parley-audio-bench device-loop`).
    What a call takes beyond this is Parley's own. One floor for both frame sizes: Parley plays in 10 ms
    periods whatever the frame (AudioFormat.playbackSamples), and the loop at 10 ms is the lowest these
    devices go; at 20 ms frames the engine reads 20 ms capture fragments, whose wait is the target's "frame"
    term. (A loop reading 20 ms and writing two 10 ms periods measured 22–34 ms: it writes as soon as it reads,
    not just in time as Parley's player does, so the second period waits behind a full queue.)"""
    directory.mkdir()
    loops = []

    def start():
        loops.append(Process([loop_binary, "device-loop", "probe_left_src", "probe_right", "10", "60"],
                             directory, "device-loop"))
        time.sleep(1.0)  # both streams open and the playback buffer primed, as for a call

    def stop():
        for loop in loops:
            loop.stop()

    return probe_latency(directory, "device", start, stop)


# MARK: baresip, the peer


def baresip_config(directory: Path, name: str, port: int, source: str, player: str, rtp: int) -> Path:
    home = directory / name
    home.mkdir(parents=True, exist_ok=True)
    modules = ["opus.so", "account.so", "menu.so"]
    modules += ["alsa.so"] if "alsa" in (source + player) else ["aufile.so"]
    (home / "config").write_text("\n".join([
        "poll_method epoll", f"sip_listen 127.0.0.1:{port}", f"audio_source {source}", f"audio_player {player}",
        "audio_alert aufile,/dev/null", "audio_srate 48000", "audio_channels 1", "ausrc_srate 48000",
        "auplay_srate 48000", "ausrc_channels 1", "auplay_channels 1", f"rtp_ports {rtp}-{rtp + 99}",
        "module_path /usr/lib/baresip/modules", "opus_bitrate 32000", "opus_stereo no",
        "opus_sprop_stereo no", *[f"module {m}" for m in modules if m not in ("account.so", "menu.so")],
        "module_app account.so", "module_app menu.so", ""]))
    (home / "accounts").write_text(f"<sip:{name}@127.0.0.1:{port}>;regint=0;answermode=auto\n")
    return home


def baresip_call_retried(directory: Path, seconds: float, sound: Path) -> tuple[list[float], dict]:
    """`baresip_call`'s CPU figures; a call that does not set up (once in a full bench, baresip's callee
    never printed "Call established") is tried once more in a fresh directory, as it measured nothing."""
    try:
        return baresip_call(directory, probe=False, seconds=seconds, sound=sound)
    except AssertionError as error:
        log(f"  baresip's call did not set up ({error}); trying once more")
        return baresip_call(directory.with_name(directory.name + "-again"), probe=False, seconds=seconds, sound=sound)


def baresip_call(directory: Path, probe: bool, seconds: float = 10.0, sound: Path | None = None):
    """A direct SIP call between two baresip processes on loopback, Opus at 32 kb/s, 20 ms. With `probe`, the
    caller's microphone and the callee's speaker are the probe's channels (via ALSA's PulseAudio plugin) and
    the mouth-to-ear latency is returned; otherwise both send `sound` (a 48 kHz WAV, aufile) and the CPU
    each process used during the call is returned (% of one core), with its split by thread
    (`threads_cpu_pct`). baresip 1.0's Opus encoder, whatever
    its config says: OPUS_APPLICATION_AUDIO, complexity 10, VBR, no in-band FEC, no DTX."""
    from harness import free_udp_port

    directory.mkdir(parents=True, exist_ok=True)
    tone = sound
    callee_port, caller_port = free_udp_port(), free_udp_port()
    if probe:
        callee = baresip_config(directory, "callee", callee_port, "alsa,pulse", "alsa,pulse", 21000)
        caller = baresip_config(directory, "caller", caller_port, "alsa,pulse", "alsa,pulse", 21100)
        callee_env = dict(os.environ, PULSE_SINK="probe_right", PULSE_SOURCE="parley_mic.monitor")
        caller_env = dict(os.environ, PULSE_SINK="parley_speaker", PULSE_SOURCE="probe_left_src")
    else:
        callee = baresip_config(directory, "callee", callee_port, f"aufile,{tone}", "aufile,/dev/null", 21000)
        caller = baresip_config(directory, "caller", caller_port, f"aufile,{tone}", "aufile,/dev/null", 21100)
        callee_env = caller_env = dict(os.environ)
    processes = []

    def start():
        processes.append(Process(["baresip", "-n", "127.0.0.1", "-f", callee], directory, "baresip-callee",
                                 env=callee_env))
        processes.append(Process(["baresip", "-n", "127.0.0.1", "-f", caller, "-e",
                                  f"/dial sip:callee@127.0.0.1:{callee_port}"],
                                 directory, "baresip-caller", env=caller_env))
        for process in processes:
            process.wait_for_line(r"Call established", timeout=20)
        time.sleep(1.0)

    def stop():
        for process in processes:
            process.stop()

    if probe:
        return probe_latency(directory, "baresip", start, stop)
    try:
        start()
    except BaseException:
        stop()  # a call that did not set up leaves no process holding its ports
        raise
    try:
        return threads_cpu_pct([p.process.pid for p in processes], seconds, baresip_thread_group)
    finally:
        stop()


# MARK: the rendezvous


def rendezvous_capacity(results: dict) -> None:
    log("== rendezvous capacity: one instance, and nginx in front of three (Scripts/bench-rendezvous)")
    text = run(["Scripts/bench-rendezvous", "--latency-seconds", "5", "--throughput-seconds", "3"], timeout=1500)
    log(text.strip())

    def setup(name: str) -> dict:
        lines = "\n".join(line[len(name) + 3:] for line in text.splitlines() if line.startswith(f"[{name}] "))
        return {
            "connections": number(r"held connections:\s+(\d+)", lines),
            "bytes_per_connection": number(r"memory per connection:\s+(\d+) bytes", lines),
            "balancer_bytes_per_connection": number(r"nginx resident memory:.*: (\d+) bytes", lines),
            "rate": number(r"relay latency at (\d+) msg/s", lines),
            "p50_ms": number(r"p50 ([0-9.]+) ms", lines),
            "p99_ms": number(r"p99 ([0-9.]+) ms", lines),
            "messages_per_second": number(r"(\d+) messages/s relayed", lines),
            "failover_seconds": number(r"re-formed on the survivors in ([0-9.]+) s", lines),
        }

    results["rendezvous"] = setup("single")
    results["rendezvous_nginx"] = setup("nginx")


# MARK: the NAT lab (run inside Scripts/natlab run)


def lab(out: Path) -> None:
    prefix = os.environ["NATLAB_PREFIX"]
    script = os.environ["NATLAB_SCRIPT"]
    work = out.parent / "lab"  # beside the caller's work files, so logs outlive the lab
    work.mkdir(parents=True)

    def ns(host: str) -> list:
        return ["ip", "netns", "exec", f"{prefix}-{host}"]

    addresses = {"c1a": "10.11.0.2", "c1b": "10.11.0.3", "c2": "10.12.0.2", "pub": "203.0.113.20",
                 "pub2": "203.0.113.21"}
    results: dict = {}
    rendezvous = start_rendezvous(work, "--stun-listen", "203.0.113.10:0", prefix=ns("srv"), listen="203.0.113.10",
                                  name="rendezvous-lab")
    try:
        log("== NAT lab: join time through cone NATs (2, 4, 8 nodes; hosts behind two routers and public ones)")
        # STUN: the rendezvous' own responder, which its WELCOME advertises (the nodes' default).
        hosts = ["c1a", "c2", "c1b", "pub", "c1a", "c2", "c1b", "pub2"]
        for count in (2, 4, 8):
            directory = work / f"join-{count}"
            directory.mkdir(mode=0o700)  # holds control sockets: parleyd wants it private
            nodes, joins = meeting(directory, count, new_invite(rendezvous.url),
                                   prefix_for=lambda i: ns(hosts[i]), local_for=lambda i: (addresses[hosts[i]],))
            for node in nodes:
                node.stop()
            results.setdefault("join_ms", {})[count] = {"max": 1000 * max(joins),
                                                        "median": 1000 * statistics.median(joins)}
            log(f"  {count} nodes: every link up {1000 * max(joins):.0f} ms after joining "
                f"(median node {1000 * statistics.median(joins):.0f} ms)")

        log("== NAT lab: PESQ-WB of speech from c1a (cone1) to c2 (cone2), random loss on cone1 (iptables)")
        speech = make_speech(work)
        results["pesq"] = {}
        for loss in (0, 5, 10, 20):
            # The loss starts once the link is up: this measures a call over a lossy link; joining
            # through one is the join-time figures' business (at 20 % it takes seconds, and speech
            # sent before the link is up would be scored as lost).
            def impair(loss=loss) -> None:
                if loss:
                    run([script, "impair", f"{prefix}-cone1", "--loss", str(loss / 100)])
            # One 10 s utterance under random loss scores ±0.3 from call to call: the median of a few calls.
            calls = []
            for call in range(PESQ_CALLS):
                try:
                    calls.append(pesq_call(work / f"pesq-{loss}-{call}", speech, rendezvous.url, ns("c1a"),
                                           ns("c2"), addresses, impair))
                finally:
                    if loss:
                        run([script, "unimpair", f"{prefix}-cone1"])
            scores = [c["mos"] for c in calls]
            results["pesq"][loss] = {"mos": statistics.median(scores), "calls": scores}
            log(f"  {loss:2d} % loss: PESQ-WB median {statistics.median(scores):.2f} of "
                f"{', '.join(f'{m:.2f}' for m in scores)}")

        log("== NAT lab: audio gaps when a path breaks (longest stretch a listener does not hear a speaker)")
        results["gaps"] = audio_gaps(work / "gaps", rendezvous.url, ns, prefix, script)

        log("== NAT lab: a pair carried by a member (mouth-to-ear through it, the CPU it costs)")
        results["relay"] = relay_cost(work / "relay", rendezvous.url, ns)

        log(f"== NAT lab: one member's uplink capped ({', '.join(c or 'none' for c in UPLINK_CAPS)}, "
            f"{UPLINK_QUEUE_MS} ms queue), 8 members, it speaks")
        results["uplink"] = uplink_cap(work / "uplink", rendezvous.url, ns, prefix, script)
    finally:
        rendezvous.process.stop()
    out.write_text(json.dumps(results))


PESQ_CALLS = 3  # calls per loss level in the NAT lab
GAP_BLOCK = RATE // 10  # 100 ms
GAP_WINDOW = 12.0  # seconds of listening after each event


def tone_heard(block: numpy.ndarray, hz: float) -> bool:
    """Whether a 100 ms block holds the tone: its amplitude at `hz` above -20 dBFS (a node's tone is -10 dBFS;
    the other tones and concealment's fading copies stay below)."""
    t = numpy.arange(len(block)) / RATE
    amplitude = 2 * abs(numpy.dot(block, numpy.exp(-2j * numpy.pi * hz * t))) / len(block)
    return amplitude > 0.1


def full_mesh_up(nodes: dict) -> bool:
    """Whether every node has a link up to each of the others."""
    return all(sum(p.get("state") == "up" for p in n.status().get("peers", [])) == len(nodes) - 1
               for n in nodes.values())


def wav_position(path: Path) -> int:
    """Samples written so far: the daemon writes its WAV as it plays, unbuffered, after a 44-byte header."""
    return max(0, (path.stat().st_size - 44) // 2)


def longest_gap(path: Path, hz: float, start: int) -> float:
    """The longest run of 100 ms blocks without the tone, in seconds, in GAP_WINDOW seconds from sample `start`
    (a little before the event: before it every tone is heard, so the run found is the event's)."""
    samples = numpy.fromfile(path, dtype="<i2", offset=44).astype(numpy.float64) / 32768
    window = samples[start:start + int(GAP_WINDOW * RATE)]
    longest = run_length = 0
    for index in range(len(window) // GAP_BLOCK):
        if tone_heard(window[index * GAP_BLOCK:(index + 1) * GAP_BLOCK], hz):
            run_length = 0
        else:
            run_length += 1
            longest = max(longest, run_length)
    if len(window) < GAP_WINDOW * RATE * 0.9:  # the listener stopped playing: count the missing time as gap
        longest += int((GAP_WINDOW * RATE - len(window)) / GAP_BLOCK)
    return longest / 10


PUBLIC = {"pub": "203.0.113.20", "pub2": "203.0.113.21", "c1a": "10.11.0.2", "c1b": "10.11.0.3", "c2": "10.12.0.2"}


def drop_between(ns, host: str, other: str, action: str) -> None:
    """Drops (action -I) or restores (-D) traffic between a public host and another address, at the host."""
    for rule in (["OUTPUT", "-d", other], ["INPUT", "-s", other]):
        run(ns(host) + ["iptables", action, *rule, "-j", "DROP"])


def peer_entry(node: Node, name: str) -> dict:
    return next((p for p in node.status().get("peers", []) if p.get("name") == name), {})


def audio_gaps(directory: Path, url: str, ns, prefix: str, script: str) -> dict:
    """Issue 14's audio gaps: three members (two public, one behind cone1) each speak a tone; after each event,
    the longest stretch in which a listener does not hear a speaker, over the pairs the event touches."""
    directory.mkdir(mode=0o700, parents=True)
    hosts = {"a": "pub", "b": "pub2", "c": "c1a"}
    tones = {"a": 440.0, "b": 660.0, "c": 880.0}
    nodes = {name: Node(directory, name, f"tone:{int(hz)}", audio_out=f"wav:{directory / (name + '.wav')}",
                        prefix=ns(hosts[name]), local_addresses=(PUBLIC[hosts[name]],))
             for name, hz in tones.items()}
    invite = new_invite(url)
    gaps: dict = {}
    try:
        for node in nodes.values():
            node.ready()
        for node in nodes.values():
            node.control.request("join", invite=invite)

        def measure(event: str, pairs: list, act, settle: float = 0.0) -> None:
            wait_until(lambda: full_mesh_up(nodes), 60, "every link up before the event", interval=0.1)
            time.sleep(2)  # steady audio before the event
            marks = {name: wav_position(directory / f"{name}.wav") - RATE for name in nodes}
            act()
            time.sleep(GAP_WINDOW + settle)
            worst = max(longest_gap(directory / f"{listener}.wav", tones[speaker], marks[listener])
                        for listener, speaker in pairs)
            gaps[event] = worst
            log(f"  {event}: longest gap {worst:.1f} s")

        def both_ways(x: str, y: str) -> list:
            return [(x, y), (y, x)]

        def cut(action: str) -> None:
            drop_between(ns, "pub", PUBLIC["pub2"], action)

        # The path between the two public members dies; both still reach c, which carries them.
        measure("path cut", both_ways("a", "b"), lambda: cut("-I"))
        cut("-D")
        wait_until(lambda: next(p for p in nodes["a"].status()["peers"] if p["name"] == "b").get("route") != "peer",
                   90, "a–b back on the direct path", interval=0.5)
        # c's router gets a new public address (a DSL reconnect), then forgets its mappings.
        c_pairs = both_ways("a", "c") + both_ways("b", "c")
        measure("NAT renumbered", c_pairs, lambda: run([script, "rebind", f"{prefix}-cone1"]))
        measure("NAT mappings flushed", c_pairs, lambda: run([script, "flush", f"{prefix}-cone1"]))

        # c is suspended for 20 s (a closed lid): the gap counts from its resume.
        def suspend() -> None:
            pid = nodes["c"].process.process.pid
            os.kill(pid, signal.SIGSTOP)
            time.sleep(20)
            for name in nodes:  # from the resume on
                marks_at_resume[name] = wav_position(directory / f"{name}.wav") - RATE // 2
            os.kill(pid, signal.SIGCONT)

        marks_at_resume: dict = {}
        wait_until(lambda: full_mesh_up(nodes), 60, "every link up before the suspend", interval=0.1)
        time.sleep(2)
        suspend()
        time.sleep(GAP_WINDOW)
        worst = max(longest_gap(directory / f"{listener}.wav", tones[speaker], marks_at_resume[listener])
                    for listener, speaker in c_pairs)
        gaps["resume after 20 s suspend"] = worst
        log(f"  resume after 20 s suspend: longest gap {worst:.1f} s after SIGCONT")
    finally:
        for node in nodes.values():
            node.stop()
    return gaps


def relay_cost(directory: Path, url: str, ns) -> dict:
    """Issue 14's relay figures. Latency: a (pub) speaks clicks to c (pub2) with b (behind cone1) in the meeting;
    mouth-to-ear is measured over the direct path, then with a–c cut at a so that b carries the pair. CPU: four
    members all sending tones (c and d relay for nobody), a–c and a–d cut, so b carries two pairs; b's CPU before
    and after."""
    directory.mkdir(mode=0o700, parents=True)
    make_probe()
    figures: dict = {}

    def start(nodes: dict, spec: dict) -> None:
        for name, (host, audio_in, audio_out, extra) in spec.items():
            nodes[name] = Node(directory, name, audio_in, audio_out=audio_out, prefix=ns(host),
                               local_addresses=(PUBLIC[host],), extra=extra)
        invite = new_invite(url)
        for node in nodes.values():
            node.ready()
        for node in nodes.values():
            node.control.request("join", invite=invite)
        wait_until(lambda: full_mesh_up(nodes), 60, "every link up", interval=0.1)

    def relayed(nodes: dict, x: str, y: str) -> bool:
        entry = peer_entry(nodes[x], y)
        return entry.get("state") == "up" and entry.get("route") == "peer"

    nodes: dict = {}
    try:
        start(nodes, {"a": ("pub", "pulse:probe_left_src", "null", ()), "b": ("c1a", "silence", "null", ()),
                      "c": ("pub2", "silence", "pulse:probe_right", ())})
        time.sleep(1.0)  # the jitter buffer settles
        rtt = {f"{x}-{y}": peer_entry(nodes[x], y).get("rtt_ms") for x, y in (("a", "c"), ("a", "b"), ("b", "c"))}
        direct = probe_clicks(directory, "direct")
        drop_between(ns, "pub", PUBLIC["pub2"], "-I")
        try:
            wait_until(lambda: relayed(nodes, "a", "c") and relayed(nodes, "c", "a"), 30, "a–c through b", interval=0.1)
            time.sleep(1.0)
            through = probe_clicks(directory, "relayed")
        finally:
            drop_between(ns, "pub", PUBLIC["pub2"], "-D")
        figures["latency_ms"] = {"direct": direct, "relayed": through, "rtt_ms": rtt}
        extra_hop = None if None in rtt.values() else rtt["a-b"] + rtt["b-c"] - rtt["a-c"]
        figures["latency_ms"]["extra_hop_rtt_ms"] = extra_hop
        log(f"  mouth-to-ear a → c: direct {direct} ms, through b {through} ms (RTT a–c {rtt['a-c']} ms, "
            f"a–b {rtt['a-b']} ms, b–c {rtt['b-c']} ms)")
    finally:
        for node in nodes.values():
            node.stop()

    nodes = {}
    never = ("--relay-pairs", "0")
    try:
        start(nodes, {"a": ("pub", "tone:440", "null", ()), "b": ("c1a", "tone:550", "null", ()),
                      "c": ("pub2", "tone:660", "null", never), "d": ("c2", "tone:770", "null", never)})
        pid = nodes["b"].process.process.pid

        def cpu_percent() -> float:
            """b's CPU: the median of three 8-s windows of its threads' nanosecond counts (one 10-s window
            of /proc's 10-ms ticks put the same carrying at +0.0 and +1.2 points in two runs)."""
            return statistics.median(threads_cpu_pct([pid], 8.0, parley_thread_group)[0][0] for _ in range(3))

        time.sleep(2.0)
        idle = cpu_percent()
        drop_between(ns, "pub", PUBLIC["pub2"], "-I")
        drop_between(ns, "pub", "198.51.100.12", "-I")  # cone2, d's router
        try:
            wait_until(lambda: relayed(nodes, "a", "c") and relayed(nodes, "a", "d"), 30, "b carrying two pairs",
                       interval=0.1)
            time.sleep(2.0)
            carrying = cpu_percent()
            pairs = nodes["b"].status()["self"]["relaying"]
            vias = {y: peer_entry(nodes["a"], y).get("via") for y in ("c", "d")}
        finally:
            drop_between(ns, "pub", PUBLIC["pub2"], "-D")
            drop_between(ns, "pub", "198.51.100.12", "-D")
        figures["cpu_pct"] = {"before": idle, "relaying": carrying, "pairs": len(pairs)}
        log(f"  b's CPU, four members all sending: {idle:.2f} % of a core; carrying {len(pairs)} pairs {carrying:.2f} % "
            f"(b carries {pairs}; a reaches c and d via {vias})")
    finally:
        for node in nodes.values():
            node.stop()
    return figures


# tc tbf rates on the speaker's router; None: the uncapped baseline. PARLEY_UPLINK_CAPS="256kbit" runs one.
UPLINK_CAPS = tuple(c or None for c in os.environ.get("PARLEY_UPLINK_CAPS", ",256kbit,128kbit").split(","))
UPLINK_QUEUE_MS = 200  # a home router's upstream buffer: a cap shows as delay as well as loss
UPLINK_SETTLE = 5.0  # s between the cap and the speech: what a sender has to find the new rate
PROBE_FIRST_AFTER = 120.0  # s from going up once to the first probe (MeetingCore's FanOutProbe.firstAfter)
UPLINK_TALK_LEAD = 55.0  # s from joining to the other talker's speech (joining and a's two utterances: ~43 s)
UPLINK_HOSTS = {"a": "c2", "b": "c1a", "c": "c1a", "d": "c1b", "e": "c1b", "f": "pub", "g": "pub", "h": "pub2"}
UPLINK_PROBE = "f"  # the listener whose speaker is the probe's right channel (mouth-to-ear)
UPLINK_TALKER = "h"  # the listener that speaks to the speaker once it is done
UPLINK_BEFORE = ("--fixed-rate",)  # the "before" of each cap: the speaker sends its configured encoding regardless
UPLINK_PER_PEER = ("--no-fan-out",)  # the estimate alone: a copy per peer fitted to the cap, never one copy up


def probe_cost(directory: Path, url: str, ns, prefix: str, script: str, cap: str = "128kbit") -> dict:
    """What a failed probe for a copy per peer (PROTOCOL §15.3) costs the listeners: a (alone behind cone2,
    capped) speaks until it goes up once, is silent, says the speech once as a control, and again across its
    first probe (due 120 s after going up), then once more right after. PESQ-WB of each utterance at the seven
    WAV listeners, the capped router's counts during the probe's utterance, and a's log lines of the probe."""
    directory.mkdir(mode=0o700, parents=True)
    os.environ.setdefault("PARLEY_BENCH_LOG_LEVEL", "info")  # a's "probing …" lines
    make_probe()
    speech = make_speech(directory)
    wavs = {name: directory / f"{name}.wav" for name in UPLINK_HOSTS if name != "a"}
    nodes = {name: Node(directory, name, "pulse:probe_left_src" if name == "a" else "silence",
                        audio_out=f"wav:{wavs[name]}" if name != "a" else "null", prefix=ns(host),
                        local_addresses=(PUBLIC[host],))
             for name, host in UPLINK_HOSTS.items()}

    def fan_out():
        return ((nodes["a"].status().get("self") or {}).get("send_rate") or {}).get("fan_out")

    def say(label: str) -> tuple:
        marks = {name: wav_position(path) for name, path in wavs.items()}
        player = Process(["paplay", "-d", "probe_left", speech["input"]], directory, f"paplay-{label}")
        if player.wait(60) != 0:
            raise RuntimeError(f"paplay failed:\n{player.stderr()[-3000:]}")
        time.sleep(1.0)  # the last words through the jitter buffer
        return marks, {name: wav_position(path) for name, path in wavs.items()}

    utterances: dict = {}
    figures: dict = {"cap": cap}
    capped = False
    try:
        for node in nodes.values():
            node.ready()
        invite = new_invite(url)
        for node in nodes.values():
            node.control.request("join", invite=invite)
        wait_until(lambda: full_mesh_up(nodes), 60, "every link up", interval=0.2)
        run([script, "impair", f"{prefix}-cone2", "--rate", cap, "--queue", str(UPLINK_QUEUE_MS)])
        capped = True
        for attempt in range(4):  # it goes up once while it speaks into the cap
            say(f"enter{attempt}")
            if fan_out():
                break
        else:
            raise RuntimeError("a did not go up once under the cap")
        entered = time.monotonic()
        time.sleep(20)
        utterances["control"] = say("control")
        time.sleep(max(0.0, entered + PROBE_FIRST_AFTER - 5 - time.monotonic()))
        before = router_counts(ns("cone2"))
        utterances["probe"] = say("probe")  # the first probe falls ~5 s into it
        after = router_counts(ns("cone2"))
        utterances["after"] = say("after")
        figures["router_during_probe"] = {key: after[key] - before[key] for key in ("sent_packets", "dropped")
                                          if after[key] is not None and before[key] is not None}
        figures["still_up_once"] = fan_out() is not None
    finally:
        for node in nodes.values():
            node.stop()
        if capped:
            run([script, "unimpair", f"{prefix}-cone2"])
    log_lines = (directory / "a.err").read_text(errors="replace").splitlines()
    figures["log"] = [line for line in log_lines if "probing" in line or "one copy up" in line
                      or "every peer again" in line]
    for label, (marks, ends) in utterances.items():
        scores = {}
        for name, path in wavs.items():
            (directory / f"pesq-{label}-{name}").mkdir()
            received = read_wav(path)[0][:, 0][marks[name]:ends[name]]
            scores[name] = score_speech(directory / f"pesq-{label}-{name}", speech["reference"], received)[0]
        figures[label] = {"listeners": scores, "min": min(scores.values()),
                          "median": statistics.median(scores.values())}
    log(f"  a failed probe at {cap}: PESQ-WB of the utterance it fell in min {figures['probe']['min']:.2f}, median "
        f"{figures['probe']['median']:.2f}; the one before it {figures['control']['min']:.2f} / "
        f"{figures['control']['median']:.2f}, the one after {figures['after']['min']:.2f} / "
        f"{figures['after']['median']:.2f}; router during it {figures['router_during_probe']}; "
        f"still one copy up: {figures['still_up_once']}; a's log: {figures['log']}")
    return figures


def uplink_cap(directory: Path, url: str, ns, prefix: str, script: str, speaker_extra=()) -> dict:
    """A member whose uplink is capped (send-side bandwidth estimate): a (c2, alone behind cone2) speaks to
    seven listeners, and in a full mesh sends one copy of its audio to each, so a capped uplink overflows
    unless the sender fits its rate to it. Per cap, one fresh meeting: PESQ-WB of its speech at each listener,
    mouth-to-ear at one, what both ends of its links measured, and PESQ of another member's speech at it (the
    cap is on its uplink only: what it hears should not change). `speaker_extra` goes to a's parleyd (a flag
    that turns the rate control off measures the "before" with the same binary)."""
    directory.mkdir(mode=0o700, parents=True)
    make_probe()
    speech = make_speech(directory)
    figures: dict = {}
    runs = [(cap or "none", cap, ()) for cap in UPLINK_CAPS]
    runs += [(f"{cap} per peer", cap, UPLINK_PER_PEER) for cap in UPLINK_CAPS if cap]
    runs += [(f"{cap} before", cap, UPLINK_BEFORE) for cap in UPLINK_CAPS if cap]
    for name, cap, flags in runs:
        entry = uplink_meeting(directory / name.replace(" ", "-"), speech, url, ns, prefix, script, cap,
                               tuple(speaker_extra) + flags)
        figures[name] = entry
        talking = entry["status"]["talking"]
        losses = [p["loss_pct"] for p in talking["listeners"].values() if p.get("loss_pct") is not None]
        peers = talking["speaker"]["peers"].values()
        rtts = [p["rtt_ms"] for p in peers if p.get("rtt_ms") is not None]

        def median(values: list, digits: int) -> str:
            return f"{statistics.median(values):.{digits}f}" if values else "—"

        pesq_values, heard = entry["pesq"], entry["pesq_at_speaker"]
        mouth = entry["mouth_to_ear_ms"]
        send_rate = talking["speaker"].get("send_rate")
        first = entry["pesq_first"]
        log(f"  uplink {name}: PESQ-WB of a's speech min {pesq_values['min']:.2f}, median {pesq_values['median']:.2f} "
            f"at 7 listeners (its first words after the cap: {first['min']:.2f} / {first['median']:.2f}); "
            f"mouth-to-ear {'—' if mouth is None else f'{mouth:.1f}'} ms; while a speaks: it sends "
            f"{entry['sent_kbps']:.0f} kb/s in all, its RTT median {median(rtts, 1)} ms, "
            f"the listeners lose median {median(losses, 1)} % of it; {UPLINK_TALKER}'s speech at a PESQ-WB "
            f"{'—' if heard is None else f'{heard:.2f}'}" + (f"; a's send_rate {json.dumps(send_rate)}" if send_rate
                                                              else ""))
        if entry.get("copies_again_s") is not None:
            lifted = entry["pesq_lifted"]
            log(f"  uplink {name}, the cap lifted: a copy per peer again after {entry['copies_again_s']:.1f} s; "
                f"a's speech then PESQ-WB min {lifted['min']:.2f}, median {lifted['median']:.2f}")
    return figures


def uplink_meeting(directory: Path, speech: dict, url: str, ns, prefix: str, script: str, cap: str | None,
                   speaker_extra: tuple) -> dict:
    """One meeting of `uplink_cap`: joined, every link up, then the cap on cone2's WAN egress (a's uplink), 5 s,
    a's speech played into the probe (six listeners record WAVs, one plays to the probe's right channel),
    clicks for mouth-to-ear, then h's speech (its WAV input: silence until UPLINK_TALK_LEAD after joining)."""
    directory.mkdir(mode=0o700)  # holds control sockets: parleyd wants it private
    talk = directory / "talk-in.wav"
    write_wav(talk, numpy.concatenate([numpy.zeros(int(UPLINK_TALK_LEAD * RATE)), speech["reference"],
                                       numpy.zeros(RATE)]))
    wavs = {name: directory / f"{name}.wav" for name in UPLINK_HOSTS if name != UPLINK_PROBE}
    nodes: dict = {}
    for name, host in UPLINK_HOSTS.items():
        audio_in = ("pulse:probe_left_src" if name == "a" else f"wav:{talk}" if name == UPLINK_TALKER
                    else "silence")
        audio_out = "pulse:probe_right" if name == UPLINK_PROBE else f"wav:{wavs[name]}"
        nodes[name] = Node(directory, name, audio_in, audio_out=audio_out, prefix=ns(host),
                           local_addresses=(PUBLIC[host],), extra=speaker_extra if name == "a" else ())
    invite = new_invite(url)
    figures: dict = {"cap": cap, "queue_ms": UPLINK_QUEUE_MS if cap else None}
    capped = False
    fans_out = not any(flag in speaker_extra for flag in UPLINK_PER_PEER + UPLINK_BEFORE)
    try:
        for node in nodes.values():
            node.ready()
        for node in nodes.values():
            node.control.request("join", invite=invite)
        joined = time.monotonic()  # h's WAV input runs from about here (its audio starts with the meeting)
        wait_until(lambda: full_mesh_up(nodes), 60, "every link up", interval=0.2)
        figures["all_up_s"] = time.monotonic() - joined
        if cap:
            run([script, "impair", f"{prefix}-cone2", "--rate", cap, "--queue", str(UPLINK_QUEUE_MS)])
            capped = True
        time.sleep(UPLINK_SETTLE)  # a fixed window: the sender's chance to find the cap before it speaks

        # a speaks twice: its first words after the cap (the sender finds the cap while they go out), then
        # the same speech again (the steady state: what the figures are about). Played into the
        # probe's left channel, which is a's microphone; the probe listener's speaker is the right channel,
        # recorded with it on one clock; the others write WAVs (marked here, so h's later speech in the
        # same files is not found instead).
        utterances: dict = {}
        status = {}

        def speak(utterance: str) -> None:
            marks = {name: wav_position(path) for name, path in wavs.items()}
            recording = directory / f"probe-speech-{utterance}.wav"
            recorder = Process(["parecord", "-d", "probe.monitor", "--channels=2", "--rate=48000",
                                "--format=s16le", "--file-format=wav", recording], directory, f"parecord-{utterance}")
            player = None
            try:
                player = Process(["paplay", "-d", "probe_left", speech["input"]], directory, f"paplay-{utterance}")
                # Halfway through the speech: the rates a sends while it talks, the loss over its last seconds.
                time.sleep(speech["lead_in"] + len(speech["reference"]) / RATE / 2)
                status[utterance] = uplink_status(nodes)
                status[utterance]["router"] = router_counts(ns("cone2"))
                if player.wait(60) != 0:
                    raise RuntimeError(f"paplay failed:\n{player.stderr()[-3000:]}")
                time.sleep(1.0)  # the speech's last words through the capped queue and the jitter buffer
            finally:
                if player:
                    player.stop()
                recorder.stop(signal.SIGINT)
            ends = {name: wav_position(path) for name, path in wavs.items()}
            status[f"after_{utterance}"] = uplink_status(nodes)
            status[f"after_{utterance}"]["router"] = router_counts(ns("cone2"))
            utterances[utterance] = (marks, ends, recording)

        for utterance in ("first", "steady"):
            speak(utterance)
        status["talking"] = status["steady"]
        figures["mouth_to_ear_ms"] = probe_clicks(directory, "clicks")
        status["end"] = uplink_status(nodes)
        figures["status"] = status
        figures["sent_kbps"] = sum(p.get("tx_kbps") or 0 for p in status["talking"]["speaker"]["peers"].values())
        figures["speaker_done_s"] = time.monotonic() - joined

        # h's speech to a, through a's uncapped downlink (a's reports and acknowledgements still go up).
        talk_mark = wav_position(wavs["a"])
        talk_starts = UPLINK_TALK_LEAD - figures["speaker_done_s"]
        if talk_starts < 0.5:
            log(f"  {UPLINK_TALKER}'s speech started {-talk_starts:.1f} s before a's part ended (UPLINK_TALK_LEAD "
                f"{UPLINK_TALK_LEAD} s): not scored")
            talk_mark = None
        else:
            time.sleep(talk_starts + len(speech["reference"]) / RATE + 1.5)  # it plays once, in real time
        if capped and fans_out:
            # The cap lifted: how long until a probe (PROTOCOL §15.3) finds that a copy per peer fits
            # again, and a's speech then. A probe needs a's media flowing: a speaks until it does.
            run([script, "unimpair", f"{prefix}-cone2"])
            capped = False
            lifted = time.monotonic()

            def copies_again() -> bool:
                rate = (nodes["a"].status().get("self") or {}).get("send_rate") or {}
                return rate.get("estimate_kbps") is not None and rate.get("fan_out") is None

            while not copies_again():
                if time.monotonic() - lifted > 330:
                    raise RuntimeError("a still sends one copy up 330 s after the cap was lifted")
                player = Process(["paplay", "-d", "probe_left", speech["input"]], directory, "paplay-lifted")
                try:
                    wait_until(lambda: copies_again() or player.process.poll() is not None, 60,
                               "a copy per peer again, or the speech's end", interval=0.5)
                finally:
                    player.stop()
            figures["copies_again_s"] = time.monotonic() - lifted
            speak("lifted")
    finally:
        for node in nodes.values():
            node.stop()
        if capped:
            run([script, "unimpair", f"{prefix}-cone2"])

    reference = speech["reference"]
    for utterance, (marks, ends, recording) in utterances.items():
        scores = {}
        for name, path in wavs.items():
            if name == "a":
                continue
            received = read_wav(path)[0][:, 0][marks[name]:ends[name]]
            (directory / f"pesq-{utterance}-{name}").mkdir()
            scores[name] = score_speech(directory / f"pesq-{utterance}-{name}", reference, received)[0]
        data = read_wav(recording)[0]
        left, right = data[:, 0], data[:, 1]
        start = best_offset(left, reference)  # when the speech entered a's microphone
        (directory / f"pesq-{utterance}-{UPLINK_PROBE}").mkdir()
        scores[UPLINK_PROBE], delay = score_speech(directory / f"pesq-{utterance}-{UPLINK_PROBE}", reference,
                                                   right[start:])
        key = "pesq" if utterance == "steady" else f"pesq_{utterance}"
        figures[key] = {"listeners": scores, "min": min(scores.values()), "median": statistics.median(scores.values())}
        # mouth-to-ear of the speech itself, beside the clicks'
        figures["speech_delay_ms" if utterance == "steady" else f"speech_delay_{utterance}_ms"] = delay / RATE * 1000
    if talk_mark is not None:
        (directory / "pesq-a").mkdir()
        figures["pesq_at_speaker"] = score_speech(directory / "pesq-a", reference,
                                                  read_wav(wavs["a"])[0][:, 0][talk_mark:])[0]
    else:
        figures["pesq_at_speaker"] = None
    return figures


def router_counts(prefix: list) -> dict:
    """What the capped router's queue (tc tbf on its WAN) sent and dropped so far, and holds now."""
    text = run(prefix + ["tc", "-s", "qdisc", "show", "dev", "wan"])
    figures = {}
    for key, pattern in (("sent_bytes", r"Sent (\d+) bytes"), ("sent_packets", r"bytes (\d+) pkt"),
                         ("dropped", r"dropped (\d+)"), ("backlog_bytes", r"backlog (\d+)b")):
        value = number(pattern, text)
        figures[key] = None if value is None else int(value)
    figures["at"] = time.monotonic()
    return figures


def uplink_status(nodes: dict) -> dict:
    """From the daemons' status: a's entry for each peer (what it receives from them, the RTT its queue adds,
    and where the daemon has them the queue delay the peer measures), its node-level send_rate where the
    daemon has one, and each listener's entry for a (what arrives of a)."""
    fields = ("state", "route", "via", "loss_pct", "rtt_ms", "jitter_ms", "tx_kbps", "rx_kbps", "concealed_ms",
              "skipped_ms", "queue_delay_ms", "latency_ms")
    own = nodes["a"].status()
    speaker = {"peers": {p["name"]: {k: p.get(k) for k in fields} for p in own.get("peers", [])},
               "send_rate": (own.get("self") or {}).get("send_rate", own.get("send_rate"))}
    listeners = {name: {k: v for k, v in peer_entry(node, "a").items() if k in fields}
                 for name, node in nodes.items() if name != "a"}
    return {"speaker": speaker, "listeners": listeners}


def make_speech(work: Path) -> dict:
    """espeak-ng speech at 48 kHz with 2 s of silence in front (the link comes up and the loss starts
    meanwhile)."""
    raw = work / "speech-raw.wav"
    run(["espeak-ng", "-v", "en+f3", "-s", "150", "-w", raw, HARVARD])
    resampled = work / "speech-48k.wav"
    run(["sox", raw, "-r", "48000", "-c", "1", "-b", "16", resampled])
    data, _, _ = read_wav(resampled)
    speech = data[:, 0]
    padded = work / "speech-in.wav"
    write_wav(padded, numpy.concatenate([numpy.zeros(2 * RATE), speech, numpy.zeros(RATE)]))
    return {"input": padded, "reference": speech, "lead_in": 2.0}


def pesq_call(directory: Path, speech: dict, url: str, sender_ns: list, receiver_ns: list, addresses: dict,
              impair) -> dict:
    """One call: speech from a WAV through a real link; `impair` is called once the link is up,
    within the speech's silent lead-in (checked)."""
    directory.mkdir(mode=0o700)  # holds control sockets: parleyd wants it private
    invite = new_invite(url)
    out = directory / "received.wav"
    sender = Node(directory, "sender", f"wav:{speech['input']}", prefix=sender_ns, local_addresses=(addresses["c1a"],))
    receiver = Node(directory, "receiver", "silence", f"wav:{out}", prefix=receiver_ns,
                    local_addresses=(addresses["c2"],))
    try:
        for node in (sender, receiver):
            node.ready()
        sender.watch()
        joined = time.monotonic()
        for node in (sender, receiver):
            node.control.request("join", invite=invite)
        wait_until(lambda: sender.peers_up() >= 1, 20, "the sender's link", interval=0.01)
        impair()
        impaired = time.monotonic() - joined
        if impaired > speech["lead_in"] - 0.2:
            raise RuntimeError(f"the link was up and impaired only {impaired:.2f} s after joining: the speech "
                               f"started at {speech['lead_in']} s")
        time.sleep(len(speech["reference"]) / RATE + 4.5)  # the speech plays once, in real time
    finally:
        sender.stop()
        receiver.stop()
    mos, offset = score_speech(directory, speech["reference"], read_wav(out)[0][:, 0])
    return {"mos": mos, "offset_ms": offset / RATE * 1000}


def score_speech(directory: Path, reference: numpy.ndarray, received: numpy.ndarray) -> tuple[float, int]:
    """PESQ-WB of `reference` where it lies in `received` (best_offset), and that offset in samples."""
    offset = best_offset(received, reference)  # where the call delivered the speech
    degraded = received[offset : offset + len(reference)]
    degraded = numpy.pad(degraded, (0, len(reference) - len(degraded)))
    return pesq_wb(directory, reference, degraded), offset


def best_offset(received: numpy.ndarray, reference: numpy.ndarray) -> int:
    """The lag of `reference` in `received` with the highest cross-correlation (FFT-based)."""
    size = 1 << (len(received) + len(reference) - 1).bit_length()
    correlation = numpy.fft.irfft(numpy.fft.rfft(received, size) * numpy.conj(numpy.fft.rfft(reference, size)),
                                  size)
    return int(numpy.argmax(correlation[: max(1, len(received) - len(reference) // 2)]))


def pesq_wb(directory: Path, reference: numpy.ndarray, degraded: numpy.ndarray) -> float:
    """PESQ-WB (ITU-T P.862.2) at 16 kHz, both signals resampled by sox the same way."""
    from pesq import pesq

    signals = []
    for name, samples in (("reference", reference), ("degraded", degraded)):
        path48, path16 = directory / f"{name}-48k.wav", directory / f"{name}-16k.wav"
        write_wav(path48, samples)
        run(["sox", path48, "-r", "16000", path16])
        signals.append(read_wav(path16)[0][:, 0])
    return float(pesq(16000, signals[0], signals[1], "wb"))


# MARK: outputs


def write_outputs(results: dict, out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    rows = []

    def row(figure, value, floor, peer=""):
        rows.append(f"| {figure} | {value} | {floor} | {peer} |")

    def fmt(value, unit, digits=0):
        return "—" if value is None else f"{value:.{digits}f} {unit}"

    loop, lab_results = results.get("loopback", {}), results.get("lab", {})
    for count in (2, 4, 8):
        entry = loop.get(count) or loop.get(str(count))
        if entry:
            module = (results.get("ice_module_ms") or {}).get(count) or (results.get("ice_module_ms") or {}).get(
                str(count))
            row(f"join, {count} nodes, loopback (all links up)", fmt(entry["join_ms"]["max"], "ms"),
                f"plain libnice {fmt(entry['join_floor_ms'], 'ms')}"
                + (f" (Parley's ICE module alone {fmt(module, 'ms')})" if module else ""))
        lab_entry = (lab_results.get("join_ms") or {}).get(str(count))
        if lab_entry:
            row(f"join, {count} nodes, NAT lab (cone NATs)", fmt(lab_entry["max"], "ms"),
                f"plain libnice (loopback) {fmt(results['ice_floor_ms'][count], 'ms')}")
    for frame in (10, 20):
        value = (results.get("latency_ms") or {}).get(frame)
        device = (results.get("device_floor_ms") or {}).get(frame)
        row(f"mouth-to-ear latency, {frame} ms frames (median of {LATENCY_ROUNDS} rounds, taken in turn with the "
            "floor's)", fmt(value, "ms", 1),
            f"codec {fmt(results['codec_latency_floor_ms'][frame], 'ms', 1)}, PulseAudio alone {fmt(device, 'ms', 1)}"
            + (f"; target {fmt(latency_target(results, frame), 'ms', 1)}" if device is not None else ""),
            f"baresip (20 ms) {fmt(results.get('baresip_latency_ms'), 'ms', 1)}" if frame == 20 else "")
        budget = (results.get("latency_budget_ms") or {}).get(frame)
        if budget:
            row(f"where it goes, {frame} ms frames (the daemons' `latency_ms`)",
                ", ".join(f"{stage} {value:.1f}" for stage, value in budget.items() if value is not None) + " ms",
                "—")
    one_to_one = results.get("one_to_one")
    if one_to_one:
        row(f"CPU per node, 1:1 call, both saying the same speech all the time (median of "
            f"{len(one_to_one['parley_pct'])} rounds, taken in turn with baresip's)",
            fmt(statistics.median(one_to_one["parley_pct"]), "% of a core", 1), cpu_floors(results, 2, "speech"),
            f"baresip {fmt(statistics.median(one_to_one['baresip_pct']), '%', 1)}")
        if one_to_one.get("parley_threads_pct"):
            row("where it goes, 1:1 call (% of a core by thread, median of the rounds)",
                f"Parley: {thread_split(one_to_one['parley_threads_pct'])}",
                "—", f"baresip: {thread_split(one_to_one['baresip_threads_pct'])}")
    for count in (2, 4, 8):
        entry = loop.get(count) or loop.get(str(count))
        if entry:
            row(f"CPU per node, {count} nodes, all sending all the time", fmt(entry["cpu_pct"]["mean"], "% of a core", 1),
                cpu_floors(results, count))
            if count == 8 and entry.get("threads_pct"):
                codec = results["codec_cpu_us"]["tone"]
                row("where it goes, 8 nodes all sending (% of a core by thread, mean of the nodes)",
                    thread_split(entry["threads_pct"]),
                    f"codec: encode {frame_cost_pct(codec['encode']):.2f} (capture), 7 decodes + mix "
                    f"{frame_cost_pct(codec['decode7_mix']):.2f} (playback); in real time "
                    f"{frame_cost_pct(codec['realtime_encode']):.2f}, {frame_cost_pct(codec['realtime_decode7_mix']):.2f}")
            row(f"bandwidth per node, {count} nodes, all sending (send / receive)",
                f"{entry['tx_kbps']:.0f} / {entry['rx_kbps']:.0f} kb/s",
                f"Opus payload {entry['bandwidth_floor_kbps']} kb/s")
    meeting = results.get("meeting")
    if meeting:
        row("join, 8th node into a running meeting, loopback (median of 3)", fmt(meeting["join_ms"], "ms"), "—")
        row("CPU per node, 8-node meeting, one talker at a time (mean / max)",
            f"{meeting['cpu_pct']['mean']:.1f} / {meeting['cpu_pct']['max']:.1f} % of a core", "—")
        row("bandwidth per node, 8-node meeting, one talker at a time (send / receive)",
            f"{meeting['tx_kbps']:.0f} / {meeting['rx_kbps']:.0f} kb/s (IP + UDP headers included)", "—")
    sixteen = results.get("sixteen")
    if sixteen:
        stress, turns = sixteen["all_sending"], sixteen["turns"]
        row("16 nodes, all sending a tone all the time: (listener, speaker) pairs heard in ≥ 80 % of 1-s blocks",
            f"{stress['pairs_heard']:.0f} of {stress['pairs']:.0f}", "—")
        row("CPU per node, 16 nodes, all sending all the time (mean / max)",
            f"{stress['cpu_pct']['mean']:.1f} / {stress['cpu_pct']['max']:.1f} % of a core",
            cpu_floors(results, 16))
        row("bandwidth per node, 16 nodes, all sending (send / receive)",
            f"{stress['tx_kbps']:.0f} / {stress['rx_kbps']:.0f} kb/s (IP + UDP headers included)", "—")
        row("join, 16th node into a running meeting, from its process start (median / max of 3; all sending / "
            "one talker at a time)",
            f"{stress['join_ms']['median']:.0f} / {stress['join_ms']['max']:.0f} ms; "
            f"{turns['join_ms']['median']:.0f} / {turns['join_ms']['max']:.0f} ms", "target ≤ 500 ms")
        row("CPU per node, 16-node meeting, one talker at a time (mean / max)",
            f"{turns['cpu_pct']['mean']:.1f} / {turns['cpu_pct']['max']:.1f} % of a core", "target ≤ 3 %")
        row("bandwidth per node, 16-node meeting, one talker at a time (send / receive)",
            f"{turns['tx_kbps']:.0f} / {turns['rx_kbps']:.0f} kb/s (IP + UDP headers included)", "—")
    for loss, value in (lab_results.get("pesq") or {}).items():
        floor = (results.get("pesq_floor") or {}).get(str(loss)) or (results.get("pesq_floor") or {}).get(int(loss))
        calls = value.get("calls") or [value["mos"]]
        spread = f" ({min(calls):.2f}–{max(calls):.2f})" if len(calls) > 1 else ""
        row(f"PESQ-WB, speech, {loss} % loss (NAT lab, median of {len(calls)} calls)", f"{value['mos']:.2f}{spread}",
            f"codec + loss model {floor:.2f}" if floor else "—")
    for event, seconds in (lab_results.get("gaps") or {}).items():
        target = 3 if event.startswith("resume") else 2
        row(f"audio gap, {event} (NAT lab, worst pair, 100 ms blocks)", fmt(seconds, "s", 1),
            f"target ≤ {target} s; lab RTT ≈ 1 ms")
    relay = lab_results.get("relay") or {}
    if relay.get("latency_ms"):
        hop = relay["latency_ms"]
        row("mouth-to-ear, 20 ms frames, a pair carried by a member (NAT lab)",
            f"{fmt(hop['relayed'], 'ms', 1)} (direct {fmt(hop['direct'], 'ms', 1)})",
            f"target ≤ direct + one frame + the extra hop's RTT ({fmt(hop['extra_hop_rtt_ms'], 'ms', 1)})")
    if relay.get("cpu_pct"):
        cpu = relay["cpu_pct"]
        row(f"CPU of a member carrying {cpu['pairs']} pairs (NAT lab, 4 members all sending)",
            f"+{cpu['relaying'] - cpu['before']:.1f} % of a core ({cpu['before']:.1f} → {cpu['relaying']:.1f} %)",
            "target ≤ +1 %")
    uplink = lab_results.get("uplink") or {}
    uncapped = uplink.get("none")

    def uplink_figures(entry: dict) -> str:
        pesq_values, first = entry["pesq"], entry.get("pesq_first")
        return (f"{pesq_values['min']:.2f} / {pesq_values['median']:.2f}"
                + (f" (first words after the cap {first['min']:.2f} / {first['median']:.2f})" if first else "")
                + f"; {fmt(entry['mouth_to_ear_ms'], 'ms', 1)}; {fmt(entry['sent_kbps'], 'kb/s')}")

    for cap, entry in uplink.items():
        if cap == "none" or cap.endswith(" before") or cap.endswith(" per peer"):
            continue
        before = uplink.get(f"{cap} before")
        per_peer = uplink.get(f"{cap} per peer")
        through = ((entry.get("status", {}).get("steady", {}).get("speaker", {}).get("send_rate") or {})
                   .get("fan_out"))
        others = ([f"a copy per peer, `--no-fan-out`: {uplink_figures(per_peer)}"] if per_peer else []) + (
            [f"before, `--fixed-rate`: {uplink_figures(before)}"] if before else [])
        row(f"uplink capped at {cap.removesuffix('kbit')} kbit/s ({entry['queue_ms']} ms queue), 8 members "
            "(NAT lab): PESQ-WB min / median at its 7 peers; mouth-to-ear; what it sends while speaking",
            uplink_figures(entry) + ("; one copy up through a member" if through else "")
            + (f" ({'; '.join(others)})" if others else ""),
            f"uncapped {uplink_figures(uncapped)}; target PESQ ≥ 3.5, mouth-to-ear ≤ uncapped + 100 ms"
            if uncapped else "—")
        if entry.get("copies_again_s") is not None:
            lifted = entry["pesq_lifted"]
            row(f"uplink capped at {cap.removesuffix('kbit')} kbit/s, then the cap lifted: a copy per peer again "
                "after (a probe, PROTOCOL §15.3); PESQ-WB min / median of its speech then",
                f"{entry['copies_again_s']:.1f} s; {lifted['min']:.2f} / {lifted['median']:.2f}",
                f"probes 120, 240, 480 … s apart; uncapped {uncapped['pesq']['min']:.2f} / {uncapped['pesq']['median']:.2f}"
                if uncapped else "probes 120, 240, 480 … s apart")
        if entry.get("pesq_at_speaker") is not None:
            row(f"uplink capped at {cap.removesuffix('kbit')} kbit/s: PESQ-WB of another member at the capped one",
                f"{entry['pesq_at_speaker']:.2f}",
                f"uncapped {uncapped['pesq_at_speaker']:.2f}" if uncapped and uncapped.get("pesq_at_speaker")
                else "—")
    rv = results.get("rendezvous") or {}
    if rv:
        row("rendezvous, one instance: connections held / memory each", f"{rv['connections']:.0f} / "
            f"{(rv['bytes_per_connection'] or 0) / 1024:.1f} KiB", "—")
        row(f"rendezvous, one instance: relay latency p50 / p99 at {rv['rate']:.0f} msg/s",
            f"{rv['p50_ms']} / {rv['p99_ms']} ms", "—")
        row("rendezvous, one instance: messages relayed per second (one core)", f"{rv['messages_per_second']:.0f}", "—")
    balanced = results.get("rendezvous_nginx") or {}
    if balanced:
        row("rendezvous, nginx + 3 instances: connections held / memory each (rendezvous + nginx)",
            f"{balanced['connections']:.0f} / {(balanced['bytes_per_connection'] or 0) / 1024:.1f} + "
            f"{(balanced['balancer_bytes_per_connection'] or 0) / 1024:.1f} KiB", "—")
        row(f"rendezvous, nginx + 3 instances: relay latency p50 / p99 at {balanced['rate']:.0f} msg/s",
            f"{balanced['p50_ms']} / {balanced['p99_ms']} ms", "—")
        if balanced.get("failover_seconds") is not None:
            row("rendezvous, nginx + 3 instances: 300 rooms re-formed after kill -9 of one instance",
                f"{balanced['failover_seconds']:.2f} s", "—")
    table = "| figure | Parley | floor (same run) | peer (same run) |\n|---|---|---|---|\n" + "\n".join(rows)
    summary = (f"# Parley benchmarks\n\n{results['machine']}; {results['date']}; `Scripts/bench` took "
               f"{results.get('seconds', 0):.0f} s.\n\n{table}\n")
    (out / "summary.md").write_text(summary)
    plots(results, out)
    return table


def plots(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loop = results.get("loopback", {})
    counts = [c for c in (2, 4, 8) if c in loop or str(c) in loop]
    entries = [loop.get(c) or loop.get(str(c)) for c in counts]
    if entries:
        figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        axes[0].plot(counts, [e["join_ms"]["max"] for e in entries], "o-", label="Parley, loopback")
        lab_join = (results.get("lab") or {}).get("join_ms") or {}
        if lab_join:
            axes[0].plot(counts, [lab_join[str(c)]["max"] for c in counts], "s-", label="Parley, NAT lab")
        axes[0].plot(counts, [e["join_floor_ms"] for e in entries], "k--", label="plain libnice (floor)")
        axes[0].set(title="join time (all links up)", xlabel="nodes", ylabel="ms")
        axes[1].plot(counts, [e["cpu_pct"]["mean"] for e in entries], "o-", label="Parley node")
        axes[1].plot(counts, [e["cpu_floor_pct"] for e in entries], "k--", label="codec only (floor)")
        mesh = [mesh_floor_pct(results, c) for c in counts]
        if None not in mesh:
            axes[1].plot(counts, [e["cpu_floor_pct"] + m for e, m in zip(entries, mesh)], "k:",
                         label="codec + mesh (floor)")
        if results.get("one_to_one"):
            axes[1].plot([2], [statistics.median(results["one_to_one"]["baresip_pct"])], "r^",
                         label="baresip 1:1 (speech)")
            axes[1].plot([2], [statistics.median(results["one_to_one"]["parley_pct"])], "bv",
                         label="Parley 1:1 (speech)")
        axes[1].set(title="CPU per node", xlabel="nodes", ylabel="% of one core")
        axes[2].plot(counts, [e["tx_kbps"] for e in entries], "o-", label="sent")
        axes[2].plot(counts, [e["rx_kbps"] for e in entries], "s-", label="received")
        axes[2].plot(counts, [e["bandwidth_floor_kbps"] for e in entries], "k--", label="Opus payload (floor)")
        axes[2].set(title="bandwidth per node", xlabel="nodes", ylabel="kb/s")
        for axis in axes:
            axis.legend(fontsize=8)
            axis.set_xticks(counts)
        figure.tight_layout()
        figure.savefig(out / "meetings.png", dpi=110)
        plt.close(figure)
    latency = results.get("latency_ms") or {}
    pesq_values = ((results.get("lab") or {}).get("pesq")) or {}
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    labels, values, colors = [], [], []
    for frame in (10, 20):
        if latency.get(frame) is not None:
            labels += [f"Parley {frame} ms", f"codec floor {frame} ms"]
            values += [latency[frame], results["codec_latency_floor_ms"][frame]]
            colors += ["tab:blue", "grey"]
    if results.get("baresip_latency_ms"):
        labels.append("baresip 20 ms")
        values.append(results["baresip_latency_ms"])
        colors.append("tab:red")
    axes[0].bar(labels, values, color=colors)
    axes[0].set(title="mouth-to-ear latency", ylabel="ms")
    axes[0].tick_params(axis="x", labelrotation=30, labelsize=8)
    if pesq_values:
        losses = sorted(int(k) for k in pesq_values)
        axes[1].plot(losses, [pesq_values[str(k)]["mos"] for k in losses], "o-", label="Parley, NAT lab")
        floor = results.get("pesq_floor") or {}
        if floor:
            axes[1].plot(losses, [floor.get(str(k)) or floor.get(k) for k in losses], "k--",
                         label="codec + loss model")
        axes[1].set(title="PESQ-WB of speech", xlabel="random loss %", ylabel="MOS-LQO", ylim=(1, 4.7))
        axes[1].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "latency-quality.png", dpi=110)
    plt.close(figure)


def pesq_floor(results: dict) -> None:
    """The codec's own PESQ-WB under the same random loss, without a network (Scripts/bench-audio quality)."""
    text = run(["Scripts/bench-audio", "quality"], timeout=300)
    section = text.split("== quality, voice en+f3")[1].split("== quality")[0]
    results["pesq_floor"] = {}
    for loss in (0, 5, 10, 20):
        match = re.search(rf"\n\s*{loss} % random loss\s+([0-9.]+)\s+([0-9.]+)", section)
        if match:
            results["pesq_floor"][str(loss)] = float(match.group(2))  # adaptive copies: what Parley sends


def ab_meeting(tree: Path, count: int, audio_in: str, window: float = 8.0) -> str:
    """Scripts/bench-ab's round: `count` nodes of $PARLEY_BIN on loopback, started by `tree`'s own bench.py
    (so an older commit's daemon gets the flags it knows), and their mean CPU over `window` seconds."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tree_bench", tree / "Scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"parley-bench-ab.{os.getpid()}"
    work.mkdir()
    try:
        rendezvous = module.start_rendezvous(work, "--stun-listen", "127.0.0.1:0", name="rendezvous-ab")
        try:
            directory = work / "meeting"
            directory.mkdir(mode=0o700)  # holds control sockets: parleyd wants it private
            inputs = {} if audio_in == "tone" else {"audio_in_for": lambda i: audio_in}
            nodes, joins = module.meeting(directory, count, module.new_invite(rendezvous.url), **inputs)
            try:
                cpu = statistics.mean(settled_cpu(nodes, window)[0])
            finally:
                for node in nodes:
                    node.stop()
        finally:
            rendezvous.process.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    label = "this-tree" if tree.resolve() == ROOT else tree.resolve().name
    return f"{label}: {cpu:.2f} % of a core per node ({count} nodes, {audio_in})"


def main() -> None:
    mode, target = sys.argv[1], Path(sys.argv[2])
    if mode == "lab":
        lab(target)
        return
    if mode == "ab-meeting":  # Scripts/bench-ab: one loopback meeting started by TREE's own bench.py
        print(ab_meeting(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]), flush=True)
        return
    if mode == "sixteen":  # the 16-node meeting alone (run through Scripts/bench's environment)
        results = {"codec_cpu_us": codec_cpu_us()}
        sixteen_benchmark(results)
        print(json.dumps(results["sixteen"], default=str))
        return
    if mode == "one-to-one":  # the 1:1 CPU comparison with baresip alone
        results = {"codec_cpu_us": codec_cpu_us()}
        target.mkdir(parents=True)
        one_to_one_cpu(results, target)
        print(json.dumps(results["one_to_one"]))
        return
    if mode == "latency":  # mouth-to-ear and its floors alone, for working on them (run under with-pulseaudio)
        results: dict = {}
        codec_latency_floor(results)
        target.mkdir(parents=True)
        latency(results, target)
        print(json.dumps({k: results[k] for k in ("device_floor_ms", "latency_ms", "latency_rounds_ms",
                                                  "latency_budget_ms")
                          if k in results}, default=str))
        return
    if mode in ("lab-gaps", "lab-relay", "lab-uplink", "lab-probe"):  # one lab part, for working on it (see the docstring)
        target.mkdir(parents=True)
        prefix = os.environ["NATLAB_PREFIX"]

        def ns(host: str) -> list:
            return ["ip", "netns", "exec", f"{prefix}-{host}"]

        rendezvous = start_rendezvous(target, "--stun-listen", "203.0.113.10:0", prefix=ns("srv"),
                                      listen="203.0.113.10", name="rendezvous-lab")  # as lab() does
        try:
            if mode == "lab-gaps":
                figures = audio_gaps(target / "gaps", rendezvous.url, ns, prefix, os.environ["NATLAB_SCRIPT"])
            elif mode == "lab-probe":
                figures = probe_cost(target / "probe", rendezvous.url, ns, prefix, os.environ["NATLAB_SCRIPT"])
            elif mode == "lab-uplink":
                figures = uplink_cap(target / "uplink", rendezvous.url, ns, prefix, os.environ["NATLAB_SCRIPT"],
                                     speaker_extra=sys.argv[3:])
            else:
                figures = relay_cost(target / "relay", rendezvous.url, ns)
            print(json.dumps(figures, default=str))
        finally:
            rendezvous.process.stop()
        return
    started = time.monotonic()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"parley-bench.{os.getpid()}"
    work.mkdir()
    results: dict = {"machine": f"{os.cpu_count()} cores, {os.uname().release}",
                     "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        existing_benchmarks(results)
        pesq_floor(results)
        loopback_meetings(results, work)
        meeting_benchmark(results)
        sixteen_benchmark(results)
        latency(results, work)
        one_to_one_cpu(results, work)
        rendezvous_capacity(results)
        lab_json = work / "lab.json"
        run(["Scripts/natlab", "run", "--", sys.executable, __file__, "lab", lab_json], timeout=1500,
            env=dict(os.environ, TMPDIR=str(work)))
        results["lab"] = json.loads(lab_json.read_text())
    finally:
        results["seconds"] = time.monotonic() - started
        table = write_outputs(results, target)
        log("\n" + table)
        log(f"\nwrote {target}/results.json, summary.md and plots in {results['seconds']:.0f} s")
        if os.environ.get("PARLEY_BENCH_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
