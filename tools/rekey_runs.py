"""Rename the fair study's records and run folders after the run-config hash changed for reasons that do not change
what a run is (an option retired at the value every run used: `dis2.methods.RETIRED`).

    python tools/rekey_runs.py [--records results/study] [--runs runs/study] [--dry-run]

Each record's stored run config is read as the current code reads it (`run_config_from_dict`, which refuses a
retired option at any other value), its key recomputed (`<method>-<_resume_key at seed 0>`), and the record
rewritten under the new name with the config as it is now stored; the run folder `runs/study/<key>/seed<k>` is moved
along and its `config.json` rewritten, so an interrupted run resumes instead of retraining. Nothing is deleted: a
record whose new name is already taken is left where it is and reported.
"""
import argparse
import json
from pathlib import Path

from dis2.core import asdict_deep, atomic_write_text
from dis2.methods import run_config_from_dict, apply_overrides
from dis2.train import _resume_key


def new_key(rec: dict) -> str:
    rc = run_config_from_dict(rec['run_config'])
    return f"{rec['method']}-{_resume_key(apply_overrides(rc, seed=0))}", rc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--records', default='results/study'); ap.add_argument('--runs', default='runs/study')
    ap.add_argument('--dry-run', action='store_true')
    a = ap.parse_args(argv)
    records, runs = Path(a.records), Path(a.runs)
    moved = kept = same = 0
    renamed = set()                       # old keys that had records
    for p in sorted(records.glob('*.json')):
        rec = json.loads(p.read_text())
        key, rc = new_key(rec)
        if key == rec['key']: same += 1; continue
        renamed.add(rec['key'])
        dst = records / f"{key}-seed{rec['seed']}.json"
        if dst.exists(): print(f"kept {p.name}: {dst.name} exists"); kept += 1; continue
        old_run, new_run = runs / rec['key'] / f"seed{rec['seed']}", runs / key / f"seed{rec['seed']}"
        print(f"{p.name} -> {dst.name}" + (f"  (+ {old_run} -> {new_run})" if old_run.is_dir() else ''))
        if a.dry_run: moved += 1; continue
        atomic_write_text(dst, json.dumps({**rec, 'key': key, 'run_config': asdict_deep(rc)}, indent=1))
        p.unlink()
        if old_run.is_dir() and not new_run.exists():
            new_run.parent.mkdir(parents=True, exist_ok=True); old_run.rename(new_run)
            if (new_run / 'config.json').exists():
                stored = run_config_from_dict(json.loads((new_run / 'config.json').read_text()))
                atomic_write_text(new_run / 'config.json', json.dumps(asdict_deep(stored), indent=1))
            (new_run / '.dis2.lock').unlink(missing_ok=True)
        moved += 1
    # in-progress runs of a current key (another seed of it has a record): their folders move too, so they resume;
    # folders of keys without any record are leftovers of older protocols and stay where they are
    current = {p.name.rsplit('-seed', 1)[0] for p in records.glob('*.json')} | set(renamed)
    for cfg_path in sorted(runs.glob('*/seed*/config.json')):
        run = cfg_path.parent
        if run.parent.name not in current or (records / f"{run.parent.name}-{run.name}.json").exists(): continue
        method = run.parent.name.rsplit('-', 1)[0]
        stored = json.loads(cfg_path.read_text())
        key, rc = new_key({'method': method, 'run_config': stored})
        target = runs / key / run.name
        if key == run.parent.name or target.exists(): continue
        print(f"in progress: {run} -> {target}")
        if a.dry_run: continue
        target.parent.mkdir(parents=True, exist_ok=True); run.rename(target)
        atomic_write_text(target / 'config.json', json.dumps(asdict_deep(rc), indent=1))
        (target / '.dis2.lock').unlink(missing_ok=True)
    for d in runs.glob('*'):
        if d.is_dir() and not any(d.iterdir()) and not a.dry_run: d.rmdir()
    print(f"{moved} renamed, {same} already current, {kept} kept (name taken)")
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
