#!/usr/bin/env bash
# Makes the deterministic test speech used by the unit/parity tests.
#
#   bash tools/make_test_audio.sh [OUT_DIR]      (default: tests/fixtures/audio)
#
# Needs espeak-ng, sox and ffmpeg/ffprobe (Debian: apt-get install espeak-ng sox ffmpeg) and python3
# (standard library only, for the manifest). Output for a given espeak-ng/sox/ffmpeg version is
# byte-identical between runs (no dither, bit-exact muxing, no metadata).
#
# 16 kHz mono PCM16 WAVs (the ones NeMo reference outputs are recorded for):
#   s1_en_us.wav .. s5_en_f2.wav   five sentences, different voices / speeds / lengths (~1.3 s .. ~5.5 s)
#   exact_1s.wav                   speech cut/padded to exactly 16000 samples
#   len_16037.wav                  speech cut/padded to 16037 samples (not a multiple of the 160-sample hop)
#   silence_1s.wav                 16000 zero samples
# Container/rate/channel variants of sentence s1 for the runtime's own audio-loading tests (no NeMo refs):
#   fmt_44k_stereo.wav (44.1 kHz, 2 ch: left = speech, right = 0.5 x speech), fmt_22k.flac, fmt_16k.ogg,
#   fmt_16k.mp3, fmt_16k.m4a
# plus manifest.json describing every file.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/tests/fixtures/audio}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

for tool in espeak-ng sox ffmpeg ffprobe python3; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool (apt-get install espeak-ng sox ffmpeg)" >&2; exit 1; }
done

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# sox: -D no dither, -R repeatable; rate -v = very high quality resampler; gain -n -3 = peak-normalise to -3 dBFS.
SOX=(sox -D -R -V1)
FF=(ffmpeg -nostdin -hide_banner -loglevel error -y -fflags +bitexact)
FFOUT=(-map_metadata -1 -flags +bitexact -fflags +bitexact)

# --- sentence table: name | voice | speed (wpm) | pitch | text ------------------------------------------
SENTENCES=(
    "s1_en_us|en-us|165|50|The quick brown fox jumps over the lazy dog."
    "s2_en_f3|en+f3|175|60|Wait, what? No! It's Bob's cat, isn't it? Yes, it's his."
    "s3_en_m7|en+m7|130|40|She sells sea shells by the sea shore, and the shells she sells are surely sea shells."
    "s4_en_m3|en+m3|200|45|Hello there, friend."
    "s5_en_f2|en+f2|150|55|Please call Stella and ask her to bring these things with her from the store."
)

# speak NAME VOICE SPEED PITCH TEXT -> $OUT/NAME.wav (16 kHz mono PCM16, peak -3 dBFS)
speak() {
    local name="$1" voice="$2" speed="$3" pitch="$4" text="$5"
    espeak-ng -v "$voice" -s "$speed" -p "$pitch" -w "$TMP/$name.raw.wav" -- "$text"
    "${SOX[@]}" "$TMP/$name.raw.wav" -r 16000 -c 1 -b 16 -e signed-integer "$OUT/$name.wav" \
        rate -v 16000 gain -n -3
}

for row in "${SENTENCES[@]}"; do
    IFS='|' read -r name voice speed pitch text <<<"$row"
    speak "$name" "$voice" "$speed" "$pitch" "$text"
done

# --- exact lengths ----------------------------------------------------------------------------------------
espeak-ng -v en-us -s 190 -p 50 -w "$TMP/exact.raw.wav" -- "Yes, okay, thank you."
"${SOX[@]}" "$TMP/exact.raw.wav" -r 16000 -c 1 -b 16 -e signed-integer "$OUT/exact_1s.wav" \
    rate -v 16000 gain -n -3 pad 0 1 trim 0 16000s

espeak-ng -v en+m4 -s 200 -p 45 -w "$TMP/odd.raw.wav" -- "One, two, three, four."
"${SOX[@]}" "$TMP/odd.raw.wav" -r 16000 -c 1 -b 16 -e signed-integer "$OUT/len_16037.wav" \
    rate -v 16000 gain -n -3 pad 0 1 trim 0 16037s

"${SOX[@]}" -r 16000 -c 1 -n -b 16 -e signed-integer "$OUT/silence_1s.wav" trim 0 16000s

# --- format variants of s1 (runtime loader tests only) ------------------------------------------------
S1="$TMP/s1_en_us.raw.wav"
espeak-ng -v en-us -s 165 -p 50 -w "$S1" -- "The quick brown fox jumps over the lazy dog."
# 44.1 kHz stereo WAV: left = speech, right = speech at half amplitude (so channel 0, 1 and the average differ)
"${SOX[@]}" "$S1" -r 44100 -c 1 -b 16 -e signed-integer "$TMP/s1_44k.wav" rate -v 44100 gain -n -3
"${SOX[@]}" "$TMP/s1_44k.wav" -c 2 -b 16 -e signed-integer "$OUT/fmt_44k_stereo.wav" remix 1v1.0 1v0.5
# 22.05 kHz mono FLAC (espeak's native rate)
"${SOX[@]}" "$S1" -r 22050 -c 1 -b 16 -e signed-integer "$TMP/s1_22k.wav" gain -n -3
"${FF[@]}" -i "$TMP/s1_22k.wav" -c:a flac -compression_level 8 "${FFOUT[@]}" "$OUT/fmt_22k.flac"
# lossy formats at 16 kHz mono
"${FF[@]}" -i "$OUT/s1_en_us.wav" -c:a libvorbis -q:a 4 "${FFOUT[@]}" "$OUT/fmt_16k.ogg"
"${FF[@]}" -i "$OUT/s1_en_us.wav" -c:a libmp3lame -b:a 48k "${FFOUT[@]}" "$OUT/fmt_16k.mp3"
"${FF[@]}" -i "$OUT/s1_en_us.wav" -c:a aac -b:a 48k "${FFOUT[@]}" "$OUT/fmt_16k.m4a"

# --- manifest ------------------------------------------------------------------------------------------
ENTRIES="$TMP/entries.tsv"
: >"$ENTRIES"
for row in "${SENTENCES[@]}"; do
    IFS='|' read -r name voice speed pitch text <<<"$row"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name.wav" "$text" "$voice" "$speed" "nemo" "sentence" >>"$ENTRIES"
done
printf '%s\t%s\t%s\t%s\t%s\t%s\n' "exact_1s.wav" "Yes, okay, thank you." "en-us" "190" "nemo" \
    "speech cut/padded to exactly 16000 samples (text may be truncated)" >>"$ENTRIES"
printf '%s\t%s\t%s\t%s\t%s\t%s\n' "len_16037.wav" "One, two, three, four." "en+m4" "200" "nemo" \
    "speech cut/padded to 16037 samples, not a multiple of the 160-sample hop (text may be truncated)" >>"$ENTRIES"
printf '%s\t%s\t%s\t%s\t%s\t%s\n' "silence_1s.wav" "" "" "" "nemo" "16000 zero samples" >>"$ENTRIES"
S1TEXT="The quick brown fox jumps over the lazy dog."
printf '%s\t%s\t%s\t%s\t%s\t%s\n' "fmt_44k_stereo.wav" "$S1TEXT" "en-us" "165" "format" \
    "PCM16 WAV 44.1 kHz stereo; left = speech, right = 0.5 x left" >>"$ENTRIES"
printf '%s\t%s\t%s\t%s\t%s\t%s\n' "fmt_22k.flac" "$S1TEXT" "en-us" "165" "format" "FLAC 22.05 kHz mono" >>"$ENTRIES"
printf '%s\t%s\t%s\t%s\t%s\t%s\n' "fmt_16k.ogg" "$S1TEXT" "en-us" "165" "format" \
    "OGG/Vorbis 16 kHz mono, encoded from s1_en_us.wav" >>"$ENTRIES"
printf '%s\t%s\t%s\t%s\t%s\t%s\n' "fmt_16k.mp3" "$S1TEXT" "en-us" "165" "format" \
    "MP3 (LAME) 16 kHz mono, encoded from s1_en_us.wav (decoders add encoder delay/padding)" >>"$ENTRIES"
printf '%s\t%s\t%s\t%s\t%s\t%s\n' "fmt_16k.m4a" "$S1TEXT" "en-us" "165" "format" \
    "AAC in MP4 (M4A) 16 kHz mono, encoded from s1_en_us.wav (decoders add priming samples)" >>"$ENTRIES"

python3 - "$OUT" "$ENTRIES" <<'PY'
import json, subprocess, sys, os
out, entries = sys.argv[1], sys.argv[2]
files = []
for line in open(entries, encoding="utf-8"):
    name, text, voice, speed, kind, note = line.rstrip("\n").split("\t")
    probe = json.loads(subprocess.check_output(
        ["ffprobe", "-v", "error", "-select_streams", "a:0", "-count_packets", "-show_entries",
         "stream=codec_name,sample_rate,channels,duration,duration_ts,time_base:format=format_name,duration",
         "-of", "json", os.path.join(out, name)]))
    st, fmt = probe["streams"][0], probe["format"]
    sr = int(st["sample_rate"])
    entry = {"file": name, "text": text, "sample_rate": sr, "channels": int(st["channels"]),
             "codec": st["codec_name"], "container": fmt["format_name"],
             "duration": round(float(st.get("duration", fmt["duration"])), 6)}
    if st["codec_name"].startswith("pcm_"):
        # exact sample count from the WAV header
        import wave
        with wave.open(os.path.join(out, name)) as w:
            entry["num_samples"] = w.getnframes()
            entry["duration"] = w.getnframes() / w.getframerate()
    entry.update({"voice": voice or None, "speed_wpm": int(speed) if speed else None,
                  "nemo_reference": kind == "nemo", "note": note,
                  "bytes": os.path.getsize(os.path.join(out, name))})
    files.append(entry)
doc = {"description": "Deterministic espeak-ng test speech made by tools/make_test_audio.sh. "
                      "'nemo_reference' files are 16 kHz mono PCM16 and have NeMo reference outputs in "
                      "tests/fixtures/models; the others test the runtime's audio loading only.",
       "tools": {t: subprocess.check_output(c, text=True).splitlines()[0].split("  Data at")[0].strip() for t, c in
                 {"espeak-ng": ["espeak-ng", "--version"], "sox": ["sox", "--version"],
                  "ffmpeg": ["ffmpeg", "-version"]}.items()},
       "files": files}
with open(os.path.join(out, "manifest.json"), "w", encoding="utf-8") as f:
    json.dump(doc, f, indent=2, ensure_ascii=False)
    f.write("\n")
total = sum(e["bytes"] for e in files)
for e in files:
    print(f"{e['file']:22s} {e['sample_rate']:6d} Hz {e['channels']} ch {e['duration']:7.3f} s {e['bytes']:8d} B")
print(f"total {total} bytes")
PY
