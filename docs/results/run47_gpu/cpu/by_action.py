import csv, sys, numpy as np
from collections import defaultdict
from sahmr.data.synthetic import SyntheticDataset
for data, ev in zip(sys.argv[1::2], sys.argv[2::2]):
    d = SyntheticDataset(data, 'val'); acts = np.asarray(d.strings('action'))
    rows = list(csv.DictReader(open(ev + '/per_frame.csv')))
    by = defaultdict(list)
    for r in rows:
        by[acts[int(r['name'].split('-')[-1])]].append((float(r['pa_mpjpe']), float(r['g_mpjpe'])))
    print(ev)
    for a in sorted(by):
        v = np.array(by[a]); print(f"  {a:16s} n={len(v):3d} PA {v[:,0].mean():6.1f} G {v[:,1].mean():6.1f}")
