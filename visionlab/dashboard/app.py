"""visionlab dashboard (Streamlit): predictions from a running ``visionlab serve`` API, and run folders.

Run with ``visionlab dashboard api=http://127.0.0.1:8000 data=camvid:DIR runs=runs`` (which sets the
VISIONLAB_DASHBOARD_* variables read below and starts ``streamlit run`` on this file).
The page knows no task: it draws the API's JSON answer (``images``, ``chart``, ``legend``) and the
dataset's ground truth through ``Task.target_picture``.
"""

from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from visionlab.dashboard.client import (ApiClient, ApiProblem, display_size, load_samples, run_curves,
                                        run_pictures, run_table, split_response)

st.set_page_config(page_title="visionlab", layout="wide")

API = os.environ.get("VISIONLAB_DASHBOARD_API", "http://127.0.0.1:8000")
DATA = os.environ.get("VISIONLAB_DASHBOARD_DATA", "synthetic")
RUNS = os.environ.get("VISIONLAB_DASHBOARD_RUNS", "runs")
API_KEY = os.environ.get("VISIONLAB_DASHBOARD_API_KEY") or None


@st.cache_resource(show_spinner=False)
def client(url: str, key: str | None) -> ApiClient:
    return ApiClient(url, key)


@st.cache_resource(show_spinner="reading the dataset ...", max_entries=4)
def samples(task: str, spec: str, split: str, size: tuple[int, int]):  # noqa: ANN201
    return load_samples(task, spec, split, size)


def legend_html(legend: dict[str, str]) -> str:
    chips = [f'<span style="display:inline-block;margin:2px 8px 2px 0"><span style="display:inline-block;'
             f'width:12px;height:12px;background:{colour};border:1px solid #888;vertical-align:middle"></span> '
             f"{name}</span>" for name, colour in legend.items()]
    return " ".join(chips)


def predict_page() -> None:
    url = st.sidebar.text_input("API", API)
    api = client(url, API_KEY)
    try:
        models = api.models()
    except ApiProblem as e:
        st.error(str(e))
        return
    if not models:
        st.warning("the API serves no model")
        return
    by_name = {m["name"]: m for m in models}
    name = st.sidebar.selectbox("model", list(by_name), format_func=lambda n: f"{n} ({by_name[n]['task']})")
    info = by_name[name]
    metrics = info.get("metrics") or {}
    st.sidebar.caption(f"task {info['task']} · input {info['input_size'][1]}x{info['input_size'][0]} · "
                       f"{info.get('arch') or ''}")
    if metrics:
        st.sidebar.json(metrics, expanded=False)

    source = st.sidebar.radio("image from", ["dataset", "upload"], horizontal=True)
    image, truth, caption = None, None, ""
    if source == "dataset":
        spec = st.sidebar.text_input("dataset", DATA, help="e.g. synthetic, camvid:DIR, cityscapes:DIR, folder:DIR")
        split = st.sidebar.selectbox("split", ["val", "test", "train"])
        try:
            data = samples(info["task"], spec, split, display_size(info["input_size"]))
        except Exception as e:  # noqa: BLE001  a bad spec is the user's to fix: one line, no traceback
            st.error(f"dataset {spec} ({split}): {e}")
            return
        if not len(data):
            st.warning(f"no images in {spec} ({split})")
            return
        index = st.sidebar.selectbox("image ID", range(len(data)), format_func=lambda i: f"{i}: {data.name(i)}")
        image, truth = data.get(index)
        caption = data.name(index)
    else:
        upload = st.sidebar.file_uploader("image", type=["png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp"])
        if upload is None:
            st.info("upload an image, or pick one from a dataset")
            return
        from visionlab.serve.imaging import UploadError, decode_upload

        try:  # the same checks as the API, so a bad file is explained here rather than as an HTTP error
            image = decode_upload(upload.getvalue(), upload.name)
        except UploadError as e:
            st.error(str(e))
            return
        caption = upload.name

    topk = st.sidebar.slider("top-k (class lists)", 1, 20, 5)
    try:
        answer = api.predict(name, image, topk=topk)
    except ApiProblem as e:
        st.error(str(e))
        return
    pictures, values, title, legend, rest = split_response(answer)
    shown = [("image", image)] + ([("ground truth", truth)] if truth is not None else []) + list(pictures.items())
    st.subheader(f"{name} on {caption}")
    for column, (label, picture) in zip(st.columns(len(shown)), shown):
        column.image(picture, caption=label, width="stretch")
    if legend:
        st.markdown(legend_html(legend), unsafe_allow_html=True)
    if values:
        st.caption(title)
        st.bar_chart(pd.Series(values, name=title or "value"), horizontal=True, sort=False)
    with st.expander("API answer"):
        st.json(rest)


def runs_page() -> None:
    root = st.sidebar.text_input("runs folder", RUNS)
    rows = run_table(root)
    if not rows:
        st.info(f"no run folders under {root}")
        return
    st.subheader(f"{len(rows)} runs in {root}")
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    run = st.selectbox("run", [r["run"] for r in rows])
    curves = run_curves(run)
    if curves is not None:
        numeric = curves.select_dtypes("number")
        keys = [c for c in numeric.columns if c.endswith("loss") or "/" not in c and c not in ("lr", "time_s")]
        chosen = st.multiselect("curves", list(numeric.columns), default=keys[:4])
        if chosen:
            st.line_chart(numeric[chosen])
    pictures = run_pictures(run)
    for name, path in pictures.items():
        st.image(str(path), caption=name)


page = st.sidebar.radio("view", ["predict", "runs"], horizontal=True)
st.title("visionlab")
if page == "predict":  # a statement, not an expression: Streamlit would print an expression's value
    predict_page()
else:
    runs_page()
