"""The three-tier demo variant: the same procedures route to the district's units."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session

from engine import organisation, services
from engine.core.calendar import VN_TZ

VARIANT = Path(__file__).resolve().parents[1] / "processes" / "demo" / "variants" / "nhon-trach-3-cap.yaml"
PROCESSES = VARIANT.parents[2]
COMMUNE = "000.15.22.T19"
SAMPLE = {"long": 1, "boolean": True, "date": "2026-03-02", "string": "Mẫu"}


def test_land_registration_routes_to_the_district_units(session: Session, now: datetime) -> None:
    data = organisation.parse_organisation(VARIANT.read_text(encoding="utf-8"), VARIANT.name)
    accounts = {(grant["agency"], grant["role"]): o["username"] for o in data["officers"] for grant in o["roles"]}
    data["officers"] = [{k: v for k, v in o.items() if k != "password"} for o in data["officers"]]
    organisation.load_organisation(session, data, "admin", now)
    files = {name: (PROCESSES / name).read_bytes() for name in ("dang-ky-dat-dai-lan-dau.bpmn", "xac-dinh-nghia-vu-tai-chinh.bpmn")}
    code = services.deploy(session, files, actor="thietke.tinh", now=now).code
    clock = datetime(2026, 3, 2, 8, 0, tzinfo=VN_TZ)
    dossier = services.start_dossier(session, code, {}, actor="motcua.phuocan", now=clock, agency_code=COMMUNE,
                                     applicant={"name": "Trần Văn Đất", "phone": "0909123456"})
    agencies_seen = []
    while tasks := services.open_tasks(session, dossier.code):
        task = tasks[0]
        agencies_seen.append(task.agency)
        actor = accounts[(task.agency, task.role)]  # the account of that role at the resolved agency
        form = services.get_version(session, code).meta["steps"][task.step_id]["form"]
        values = {f["id"]: SAMPLE.get(f["type"], "Mẫu") for f in form if f["required"]}
        services.complete_task(session, task.id, {**values, "du_dieu_kien": True}, actor=actor, now=clock)
    assert services.get_dossier(session, dossier.code).status == services.DossierStatus.PROCESSED
    # The district's land branch and tax unit serve the commune, not the province's offices.
    assert "000.15.31.T19" in agencies_seen and "000.15.40.T19" in agencies_seen
    assert not {"000.00.31.T19", "000.00.40.T19"} & set(agencies_seen)
    assert agencies_seen[0] == agencies_seen[-1] == COMMUNE
