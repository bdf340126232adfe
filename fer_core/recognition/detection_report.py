"""How well each detector finds real faces, what crop margin it needs and what alignment buys:
the measurements behind the detection defaults (docs/detection.md).

    fer-detection-report --data DIR [--faces 240] [--weights PATH]

Three tables, all on the same images:
1. candidates: recall, false boxes and ms per 640x480 frame, on the real-face fixtures, the
   fixture group photo and generated scenes of FER-2013 test faces (sizes 64-160 px, tilts up
   to 30 degrees, textured background);
2. the crop around the learned detector's box (margin, and how far up its centre sits) that best
   reproduces FER-2013's framing, chosen on the validation slice of train/, never on test/;
3. accuracy on tilted faces, with and without alignment, per detector;
4. the smallest face: recall, false boxes and ms per photo for MTCNN at each floor, on group photos
   whose people at the back are 24-40 px (the fixture portraits scaled down) and scenes of small
   FER-2013 test faces.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from fer_core.common.paths import PROJECT_ROOT
from fer_core.recognition.detect import DetectorSettings, available_detectors, get_detector
from fer_core.recognition.scenes import Scene, compose_scene, load_pictures, matches, photo_group, score_detections
from fer_core.recognition.webcam import WEBCAM_SETTINGS

FIXTURES = PROJECT_ROOT / "tests" / "fixtures" / "faces"
"""The real-face fixture photographs (and their faces.json) that the tests, this report and the pipeline bench share."""
SIZES = (64, 96, 128, 160)
ANGLES = (0, 15, -15, 30, -30, 0)


@dataclass(frozen=True)
class Candidate:
    name: str
    detector: str
    settings: DetectorSettings


CANDIDATES = (
    Candidate("haar, photo settings (paper)", "haar", DetectorSettings()),
    Candidate("haar, webcam settings", "haar", WEBCAM_SETTINGS["haar"]),
    Candidate("mtcnn, photo settings (default)", "mtcnn", DetectorSettings()),
    Candidate("mtcnn, webcam settings", "mtcnn", WEBCAM_SETTINGS["mtcnn"]),
    Candidate("dlib HOG (optional package dlib-bin)", "dlib", DetectorSettings()),
    Candidate("blazeface (full range, LiteRT), photo settings", "blazeface", DetectorSettings()),
    Candidate("blazeface (full range, LiteRT), webcam settings", "blazeface", WEBCAM_SETTINGS["mtcnn"]),
)


def test_faces(test_dir: Path, n: int, seed: int = 0) -> list[tuple[np.ndarray, int]]:
    """``n`` random FER-2013 test faces (blank ones skipped) with their class index."""
    from fer_core.common.labels import EMOTIONS

    files = sorted(test_dir.glob("*/*.jpg"))
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.permutation(len(files)):
        face = cv2.imread(str(files[i]), cv2.IMREAD_GRAYSCALE)
        if face is not None and face.std() >= 10 and files[i].parent.name in EMOTIONS:
            out.append((face, EMOTIONS.index(files[i].parent.name)))
            if len(out) == n:
                break
    return out


def generated_scenes(faces: list[np.ndarray], per_scene: int = 4, angles: tuple = ANGLES) -> list[Scene]:
    """Scenes of ``per_scene`` faces each, cycling through the sizes and tilts."""
    scenes = []
    for k in range(0, len(faces) - per_scene + 1, per_scene):
        j = k // per_scene
        sides = [SIZES[(j + i) % len(SIZES)] for i in range(per_scene)]
        tilts = [angles[(3 * j + i) % len(angles)] for i in range(per_scene)]
        scenes.append(compose_scene(faces[k:k + per_scene], sides, tilts, seed=k))
    return scenes


def candidates_table(scenes: list[Scene], real: list[Scene]) -> list[dict]:
    rows = []
    for c in CANDIDATES:
        if c.detector not in available_detectors():
            continue
        det = get_detector(c.detector)
        row: dict = {"candidate": c.name}
        for label, group in (("real", real), ("generated", scenes)):
            found = false = total = 0
            times = []
            for sc in group:
                t0 = time.perf_counter()
                boxes = [d.box for d in det.detect(sc.image, c.settings)]
                times.append((time.perf_counter() - t0) * 1000)
                hit, bad = score_detections(boxes, sc.boxes)
                found, false, total = found + hit, false + bad, total + len(sc.boxes)
            row[label] = (found, total, false)
            if label == "generated":
                row["ms"] = statistics.median(times)
        rows.append(row)
    return rows


FLOORS = (40, 32, 24)
SMALL_SIZES = (24, 28, 32, 36, 40)
SMALL_GROUPS = 6


def small_group(pictures: dict, seed: int) -> Scene:
    """A group photo of seven people, five of them small (faces of about 24-40 px, at the back)."""
    from fer_core.recognition.scenes import group_scene

    a, g = pictures["astronaut.png"], pictures["grace_hopper.jpg"]
    rng = np.random.default_rng(seed)

    def scale(pic, side: float) -> float:  # the portrait scaled so that its face is ``side`` px
        return side / max(pic.boxes[0][2:])

    back = []
    for i in range(5):
        pic = a if (i + seed) % 2 else g
        side = SMALL_SIZES[(i + seed) % len(SMALL_SIZES)]
        back.append((pic, scale(pic, side), float(rng.uniform(-10, 10)), (70 + 125 * i, 80 + 30 * (i % 2)),
                     bool(i % 3 == 0)))
    front = [(a, scale(a, 90), 0.0, (200, 330), False), (g, scale(g, 80), 5.0, (460, 340), True)]
    return group_scene(back + front, (480, 640), seed)


def floor_table(faces: list[np.ndarray], pictures: dict, n_groups: int = SMALL_GROUPS) -> list[dict]:
    """Per smallest-face floor: MTCNN's recall and false boxes on small-face group photos and on scenes of
    small FER-2013 faces, and the median ms per 640x480 photo."""
    det = get_detector("mtcnn")
    groups = [small_group(pictures, seed) for seed in range(n_groups)]
    scenes = []
    for k in range(0, len(faces) - 5, 6):
        sides = [SMALL_SIZES[(k // 6 + i) % len(SMALL_SIZES)] for i in range(6)]
        scenes.append(compose_scene(faces[k:k + 6], sides, [0.0] * 6, seed=k))
    rows = []
    for floor in FLOORS:
        settings = replace(DetectorSettings(), min_size=floor)
        row: dict = {"floor": floor}
        for label, group in (("groups", groups), ("generated", scenes)):
            found = false = total = 0
            times = []
            for sc in group:
                t0 = time.perf_counter()
                boxes = [d.box for d in det.detect(sc.image, settings)]
                times.append((time.perf_counter() - t0) * 1000)
                hit, bad = score_detections(boxes, sc.boxes)
                found, false, total = found + hit, false + bad, total + len(sc.boxes)
            row[label] = (found, total, false)
            row[f"{label}_ms"] = statistics.median(times)
        rows.append(row)
    return rows


def geometry_table(labelled: list[tuple[np.ndarray, int]], weights: Path, margins: tuple[float, ...],
                   lifts: tuple[float, ...]) -> dict[tuple[float, float], tuple[float, float, int]]:
    """(margin, lift) -> (median correlation of the crop with the FER-2013 original, accuracy of the
    classifier on the crops, faces) for the upright faces mtcnn finds in scenes."""
    from fer_core.recognition.align import crop_face
    from fer_core.recognition.recognizer import Recognizer

    rec = Recognizer(weights, detector="mtcnn")
    crops: dict[tuple[float, float], list[np.ndarray]] = {(m, lift): [] for m in margins for lift in lifts}
    originals, labels = [], []
    for k, sc in enumerate(generated_scenes([f for f, _ in labelled], angles=(0,))):
        found = rec.detect(sc.image, DetectorSettings())
        for t, box in enumerate(sc.boxes):
            hit = next((d for d in found if matches(d.box, box)), None)
            if hit is None:
                continue
            face, label = labelled[4 * k + t]
            originals.append(face)
            labels.append(label)
            for (m, lift), out in crops.items():
                out.append(crop_face(sc.image, hit, m, face.shape[0], align=False, lift=lift))
    table = {}
    for key, cs in crops.items():
        r = [float(np.corrcoef(c.ravel().astype(float), o.ravel().astype(float))[0, 1])
             for c, o in zip(cs, originals, strict=True)]
        acc = float((rec.classify(np.stack(cs)).argmax(1) == np.array(labels)).mean())
        table[key] = (statistics.median(r), acc, len(cs))
    return table


def alignment_table(labelled: list[tuple[np.ndarray, int]], weights: Path) -> list[dict]:
    """Accuracy of the classifier on faces tilted by 0/15/30 degrees in scenes, per detector, aligned or not.
    'of all' counts a missed face as wrong; 'of found' scores only the faces the detector found."""
    from fer_core.recognition.recognizer import Recognizer

    rows = []
    faces = [f for f, _ in labelled]
    labels = [y for _, y in labelled]
    for tilt in (0, 15, 30):
        angles = (tilt, -tilt) if tilt else (0,)
        scenes = generated_scenes(faces, angles=angles)
        for detector in available_detectors():
            rec = Recognizer(weights, detector=detector)
            for align in (False, True):
                s = replace(rec.settings, align=align)
                right = found = total = 0
                for k, sc in enumerate(scenes):
                    dets, crops = rec.find_faces(sc.image, whole=False, settings=s)
                    probs = rec.classify(crops)
                    for t, box in enumerate(sc.boxes):
                        total += 1
                        hit = next((i for i, d in enumerate(dets) if matches(d.box, box)), None)
                        if hit is not None:
                            found += 1
                            right += int(probs[hit].argmax() == labels[4 * k + t])
                rows.append({"tilt": tilt, "detector": detector, "align": align, "found": found, "total": total,
                             "acc_all": right / total, "acc_found": right / max(found, 1)})
    return rows


def main(argv: list[str] | None = None) -> int:
    from fer_core.common.paths import default_data_path
    from fer_core.evaluation.evaluate import load_eval_split

    ap = argparse.ArgumentParser(prog="fer-detection-report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="FER-2013 folder with test/ (default: $FER_DATA or data/fer2013)")
    ap.add_argument("--faces", type=int, default=240, help="FER-2013 test faces per table")
    ap.add_argument("--weights", default=None, help="classifier for the alignment table (default: the fast model)")
    args = ap.parse_args(argv)
    test_dir = Path(args.data or default_data_path()) / "test"
    if not test_dir.is_dir():
        print(f"error: {test_dir} not found (pass --data or set FER_DATA)", file=sys.stderr)
        return 2
    from fer_core.models.active import DEFAULT_WEIGHTS

    weights = Path(args.weights) if args.weights else DEFAULT_WEIGHTS
    labelled = test_faces(test_dir, args.faces)
    faces = [f for f, _ in labelled]
    pictures = load_pictures(FIXTURES)
    real = [Scene(p.image, p.boxes, [0.0] * len(p.boxes)) for p in pictures.values()] + [photo_group(pictures)]

    print(f"### Candidates ({len(faces)} FER-2013 test faces in {len(faces) // 4} generated 640x480 scenes; "
          f"real = {len(pictures)} fixture photos + the fixture group photo)\n")
    print("| detector | real faces found | real false boxes | generated found | generated false boxes | "
          "ms / 640x480 frame |\n|---|---:|---:|---:|---:|---:|")
    for r in candidates_table(generated_scenes(faces), real):
        (rf, rt, rb), (gf, gt, gb) = r["real"], r["generated"]
        print(f"| {r['candidate']} | {rf}/{rt} | {rb} | {gf}/{gt} ({100 * gf / gt:.0f}%) | {gb} | {r['ms']:.1f} |")

    print(f"\n### The smallest face (MTCNN, photo settings; group photos: {SMALL_GROUPS} scenes of 7 people, 5 of them "
          "24-40 px at the back; generated: small FER-2013 test faces, 24-40 px, 6 to a scene)\n")
    print("| smallest face | group faces found | group false boxes | generated found | generated false boxes | "
          "ms / group photo |\n|---:|---:|---:|---:|---:|---:|")
    for r in floor_table(faces, pictures):
        (rf, rt, rb), (gf, gt, gb) = r["groups"], r["generated"]
        print(f"| {r['floor']} px{' (default)' if r['floor'] == DetectorSettings().min_size else ''} | {rf}/{rt} | "
              f"{rb} | {gf}/{gt} ({100 * gf / gt:.0f}%) | {gb} | {r['groups_ms']:.1f} |")

    val = load_eval_split(args.data or default_data_path(), "val")  # the seed-0 slice the shipped models held out
    held_out = [(img[0].numpy(), int(y)) for img, y in zip(val.images, val.labels, strict=True)
                if img.float().std() >= 10]
    held_out = [held_out[i] for i in np.random.default_rng(0).permutation(len(held_out))[:args.faces * 2]]
    margins, lifts = (-0.1, -0.05, 0.0, 0.05, 0.1), (0.0, 0.05, 0.1, 0.15)
    table = geometry_table(held_out, weights, margins, lifts)
    n = next(iter(table.values()))[2]
    print(f"\n### The crop around the mtcnn box ({n} upright faces of the seed-0 validation slice of train/ found in "
          f"scenes; correlation with the FER-2013 original / accuracy of {weights.name})\n")
    print("| margin \\ lift | " + " | ".join(f"{lift:+.2f}" for lift in lifts) + " |\n|---|" + "---:|" * len(lifts))
    for m in margins:
        print(f"| {m:+.2f} | " + " | ".join(f"{table[m, lift][0]:.3f} / {100 * table[m, lift][1]:.1f}%"
                                             for lift in lifts) + " |")

    print(f"\n### Alignment: accuracy of {weights.name} on tilted faces in scenes\n")
    print("| tilt | detector | aligned | found | accuracy of all faces | accuracy of found faces |\n"
          "|---:|---|---|---:|---:|---:|")
    for r in alignment_table(labelled, weights):
        print(f"| ±{r['tilt']}° | {r['detector']} | {'yes' if r['align'] else 'no'} | {r['found']}/{r['total']} | "
              f"{100 * r['acc_all']:.1f}% | {100 * r['acc_found']:.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
