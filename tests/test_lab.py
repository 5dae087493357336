"""`make lab`: JupyterLab serves the notebooks and runs code on the project's kernel.

The test starts `jupyter lab` headlessly on a free loopback port with a random token, in private Jupyter
config/runtime folders, with the kernel registered exactly as `make lab` does it (`python -m ipykernel install
--name dis2`, here into a temporary prefix instead of the venv). Through the server's REST API it lists
`nbs/` (`/api/contents/nbs`), checks the `dis2` kernel spec and the Lab page, then runs a small notebook *through
the server's own kernel*: a session is created with `POST /api/sessions` (kernel `dis2`, path under `nbs/`),
and each code cell is sent as an `execute_request` over the kernel's websocket (`/api/kernels/<id>/channels`,
Jupyter's JSON message protocol, via `websocket-client`); the outputs are compared with values computed in
this process. Finally the session is deleted and the server is stopped with `POST /api/shutdown`.
Skips cleanly when JupyterLab (or websocket-client) is not installed. Takes ~10–20 s on 2 cores.
"""
import json, os, socket, subprocess, sys, time, uuid
from pathlib import Path
import pytest

jupyterlab = pytest.importorskip('jupyterlab')
websocket = pytest.importorskip('websocket')
requests = pytest.importorskip('requests')
nbformat = pytest.importorskip('nbformat')

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _wait(url, token, proc, timeout=60.):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None: raise RuntimeError(f"jupyter lab exited with {proc.returncode}")
        try:
            r = requests.get(url, headers={'Authorization': f'token {token}'}, timeout=2)
            if r.status_code == 200: return r
        except requests.ConnectionError: pass
        time.sleep(.3)
    raise TimeoutError(f"no answer from {url} in {timeout:.0f} s")


def _message(code: str, session: str) -> dict:
    return {'header': {'msg_id': uuid.uuid4().hex, 'username': 'test', 'session': session, 'msg_type': 'execute_request',
                       'version': '5.3', 'date': ''},
            'parent_header': {}, 'metadata': {}, 'channel': 'shell', 'buffers': [],
            'content': {'code': code, 'silent': False, 'store_history': True, 'user_expressions': {},
                        'allow_stdin': False, 'stop_on_error': True}}


def _execute(ws, code: str, session: str, timeout=60.) -> list:
    "Send one cell; return its iopub outputs (nbformat-like dicts) once the kernel is idle again; raise on error."
    msg = _message(code, session); ws.send(json.dumps(msg)); outs = []
    t0 = time.time()
    while time.time() - t0 < timeout:
        m = json.loads(ws.recv())
        if m.get('parent_header', {}).get('msg_id') != msg['header']['msg_id'] or m.get('channel') != 'iopub': continue
        kind = m['msg_type']
        if kind == 'error': raise AssertionError(f"cell failed in the kernel: {m['content']['ename']}: {m['content']['evalue']}")
        if kind in ('stream', 'execute_result', 'display_data'): outs.append(m['content'])
        if kind == 'status' and m['content']['execution_state'] == 'idle': return outs
    raise TimeoutError(f"cell did not finish in {timeout:.0f} s: {code!r}")


def _text(outs) -> str:
    return ''.join(o.get('text', '') or o.get('data', {}).get('text/plain', '') for o in outs)


@pytest.fixture
def lab(tmp_path):
    "A running headless JupyterLab on the checkout with the `dis2` kernel: yields (base url, token)."
    prefix = tmp_path / 'prefix'
    subprocess.run([sys.executable, '-m', 'ipykernel', 'install', '--prefix', str(prefix), '--name', 'dis2',
                    '--display-name', 'Python (dis2)'], check=True, capture_output=True)
    port, token = _free_port(), uuid.uuid4().hex
    env = {**os.environ, 'JUPYTER_CONFIG_DIR': str(tmp_path / 'config'), 'JUPYTER_RUNTIME_DIR': str(tmp_path / 'runtime'),
           'JUPYTER_PATH': str(prefix / 'share' / 'jupyter'), 'JUPYTER_PLATFORM_DIRS': '1'}
    log = open(tmp_path / 'lab.log', 'w')
    proc = subprocess.Popen([sys.executable, '-m', 'jupyter', 'lab', '--no-browser', '--allow-root', '--ServerApp.ip=127.0.0.1',
                             f'--ServerApp.port={port}', '--ServerApp.port_retries=0', f'--IdentityProvider.token={token}',
                             f'--ServerApp.root_dir={REPO}', '--MappingKernelManager.default_kernel_name=dis2',
                             '--LabApp.news_url=', '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate'],
                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f'http://127.0.0.1:{port}'
    try:
        try: _wait(f'{base}/api/status', token, proc)
        except (RuntimeError, TimeoutError) as e:
            log.flush(); raise RuntimeError(f"{e}; log tail:\n{(tmp_path / 'lab.log').read_text()[-2000:]}") from None
        yield base, token
    finally:
        try: requests.post(f'{base}/api/shutdown', headers={'Authorization': f'token {token}'}, timeout=5)
        except requests.RequestException: pass
        try: proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.terminate(); proc.wait(10)
        log.close()
        assert proc.returncode is not None


def test_lab_lists_nbs_and_runs_a_notebook(lab):
    base, token = lab
    auth = {'Authorization': f'token {token}'}
    # the token is required
    assert requests.get(f'{base}/api/contents/nbs', timeout=10).status_code == 403
    listing = requests.get(f'{base}/api/contents/nbs', headers=auth, timeout=10).json()
    names = {c['name'] for c in listing['content']}
    on_disk = {p.name for p in (REPO / 'nbs').glob('*.ipynb')}
    assert on_disk and on_disk <= names, sorted(on_disk - names)
    specs = requests.get(f'{base}/api/kernelspecs', headers=auth, timeout=10).json()
    assert specs['default'] == 'dis2' and specs['kernelspecs']['dis2']['spec']['display_name'] == 'Python (dis2)'
    assert requests.get(f'{base}/lab', headers=auth, timeout=10).status_code == 200

    # a small notebook, executed cell by cell on the server's dis2 kernel (working folder nbs/, as in Lab)
    from dis2.core import config_hash
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell('# probe'),
        nbformat.v4.new_code_cell('import os, sys\nprint(sys.executable)\nprint(os.path.basename(os.getcwd()))'),
        nbformat.v4.new_code_cell("from dis2.core import config_hash\nconfig_hash({'lab': [1, 2]})")])
    r = requests.post(f'{base}/api/sessions', headers=auth, timeout=60,
                      json={'path': 'nbs/_lab_probe.ipynb', 'name': '_lab_probe.ipynb', 'type': 'notebook',
                            'kernel': {'name': 'dis2'}})
    assert r.status_code == 201, r.text
    sess = r.json(); kid = sess['kernel']['id']
    assert sess['kernel']['name'] == 'dis2'
    ws = websocket.create_connection(f"ws://127.0.0.1:{base.rsplit(':', 1)[1]}/api/kernels/{kid}/channels?token={token}",
                                     timeout=60)
    try:
        outs = [_execute(ws, c.source, uuid.uuid4().hex) for c in nb.cells if c.cell_type == 'code']
    finally: ws.close()
    exe, cwd = _text(outs[0]).split()
    assert Path(exe).resolve() == Path(sys.executable).resolve()        # the project's interpreter, not another Python
    assert cwd == 'nbs'
    assert _text(outs[1]).strip().strip("'") == config_hash({'lab': [1, 2]})
    assert requests.delete(f"{base}/api/sessions/{sess['id']}", headers=auth, timeout=30).status_code == 204
    assert not (REPO / 'nbs' / '_lab_probe.ipynb').exists()           # nothing was written into the checkout


def test_make_lab_recipe():
    "`make lab` registers the kernel it opens Lab with, and roots Lab at nbs/."
    mk = (REPO / 'Makefile').read_text()
    recipe = mk.split('\nlab:', 1)[1].split('\n\n', 1)[0]
    assert 'ipykernel install --sys-prefix --name dis2' in recipe
    assert '--ServerApp.root_dir=nbs' in recipe and 'default_kernel_name=dis2' in recipe
    assert 'jupyterlab' in (REPO / 'settings.ini').read_text().split('dev_requirements', 1)[1].splitlines()[0]
