"""`techport demo`: fill a running platform with a realistic IJmond network, through the public API (schools,
companies, vacancies) and partner events (one school's student system publishes its students to the ingress
topic), then show matches and where the captured email is."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from techport_shared.envelope import Envelope, to_binary
from techport_shared.events import ce_type
from techport_shared.postcodes import areas
from techport_shared.topics import partner_topics

console = Console()

SCHOOLS = [
    ("ijmond-vakcollege", "IJmond Vakcollege", "1971", "IJmuiden", "30MX"),
    ("kennemer-techniek", "Kennemer Techniek College", "1941", "Beverwijk", "31KT"),
    ("hogeschool-noordzee", "Hogeschool Noordzee", "2011", "Haarlem", "22HN"),
]
COMPANIES = [
    ("staal-ijmuiden", "Staalbedrijf IJmuiden", "1971", ["staal", "procesindustrie"], "proc.steel"),
    (
        "windservice-noordzee",
        "Windservice Noordzee",
        "1976",
        ["offshore wind", "onderhoud"],
        "wind.turbine.maint",
    ),
    ("haven-velsen", "Havenbedrijf Velsen", "1951", ["maritiem", "logistiek"], "maritime.repair"),
    ("procesbouw-beverwijk", "Procesbouw Beverwijk", "1948", ["installatietechniek"], "metal.pipefitting"),
    ("elektro-heemskerk", "Elektrotechniek Heemskerk", "1962", ["elektrotechniek"], "elec.installation"),
    ("cnc-velsen", "Precisiebewerking Velsen", "1981", ["maakindustrie"], "cnc.milling"),
]
ROLES = {
    "proc.steel": (
        "Procesoperator staalproductie",
        ["proc.operator", "safety.vca.basic", "proc.control.room"],
    ),
    "wind.turbine.maint": (
        "Monteur onderhoud windturbines offshore",
        ["safety.gwo.bst", "safety.heights", "elec.troubleshooting"],
    ),
    "maritime.repair": ("Scheepsreparateur", ["weld.mag", "metal.construction", "safety.vca.basic"]),
    "metal.pipefitting": ("Pijpfitter", ["metal.pipefitting", "weld.tig", "drawing.reading"]),
    "elec.installation": ("Elektromonteur", ["elec.installation", "elec.nen3140", "elec.measurement"]),
    "cnc.milling": ("CNC-verspaner", ["cnc.milling", "cnc.programming", "measure.precision"]),
}
FIRST = [
    "Daan",
    "Sem",
    "Lucas",
    "Noah",
    "Finn",
    "Levi",
    "Milan",
    "Bram",
    "Sanne",
    "Emma",
    "Julia",
    "Lotte",
    "Fleur",
    "Noor",
    "Anouk",
    "Yara",
    "Mohammed",
    "Amir",
    "Sara",
    "Iris",
    "Jesse",
    "Thijs",
    "Ruben",
    "Lisa",
]
LAST = [
    "de Vries",
    "Jansen",
    "Bakker",
    "Visser",
    "Smit",
    "Meijer",
    "de Boer",
    "Mulder",
    "Bos",
    "Vos",
    "Peters",
    "Hendriks",
    "Dekker",
    "Brouwer",
    "de Wit",
    "Kok",
    "Koster",
    "Vermeulen",
    "Yilmaz",
    "El Amrani",
]
LEVELS = ["mbo-2", "mbo-3", "mbo-3", "mbo-4", "mbo-4", "hbo-ad", "hbo-bachelor"]


def _postcode(pc4: str, rng: random.Random) -> str:
    return f"{pc4} {rng.choice('ABCDEFGHJKLMNPRSTVWXZ')}{rng.choice('ABCDEFGHJKLMNPRSTVWXZ')}"


def _student(index: int, school: tuple[str, ...], rng: random.Random, ijmond: list[str]) -> dict[str, Any]:
    role_skills = [skill for _, skills in ROLES.values() for skill in skills]
    skills = set(rng.sample(role_skills, k=rng.randint(3, 7)))
    skills |= set(
        rng.sample(["lang.en", "lang.nl", "soft.teamwork", "safety.vca.basic", "lift.forklift"], k=2)
    )
    first = rng.choice(FIRST)
    return {
        "student_id": f"{school[0]}-stu-{index:04d}",
        "school_id": school[0],
        "given_name": first,
        "family_name": rng.choice(LAST),
        "email": f"{first.lower()}.{index}@student.{school[0]}.example.nl",
        "level": rng.choice(LEVELS),
        "programme": rng.choice(
            ["Technicus engineering", "Monteur mechatronica", "Procestechniek", "Elektrotechniek"]
        ),
        "skills": sorted(skills),
        "seeking": rng.sample(["internship", "apprenticeship", "job"], k=rng.randint(1, 2)),
        "postcode": _postcode(rng.choice(ijmond), rng),
        "max_distance_km": rng.choice([15, 25, 40]),
        "preferred_language": "en" if rng.random() < 0.1 else "nl",
        "consent": {"matching": rng.random() < 0.95, "email": rng.random() < 0.8},
    }


async def _demo(endpoints: dict[str, Any], operator_key: str, students: int, seed: int) -> None:
    rng = random.Random(seed)
    ijmond = [
        pc
        for pc, area in areas().items()
        if area.place
        in ("IJmuiden", "Velsen-Noord", "Beverwijk", "Heemskerk", "Haarlem", "Santpoort-Noord", "Driehuis")
    ]
    api = f"{endpoints['gateway']}/api/v1"
    operator = {"Authorization": f"Bearer {operator_key}"}
    keys: dict[str, str] = {}
    vacancies = []
    for company_id, _, _, _, role in COMPANIES:
        title, required = ROLES[role]
        for n, kind in enumerate(("apprenticeship", "internship", "job")):
            vacancies.append(
                (
                    company_id,
                    {
                        "vacancy_id": f"{company_id}-vac-{n + 1}",
                        "organisation_id": company_id,
                        "title": (
                            "BBL " if kind == "apprenticeship" else "Stage " if kind == "internship" else ""
                        )
                        + title,
                        "description": f"{title} in de IJmond.",
                        "kind": kind,
                        "required_skills": required,
                        "preferred_skills": ["lang.en"]
                        if role == "wind.turbine.maint"
                        else ["soft.teamwork"],
                        "levels": ["mbo-2", "mbo-3", "mbo-4"] if kind != "job" else [],
                        "postcode": _postcode(next(c[2] for c in COMPANIES if c[0] == company_id), rng),
                        "positions": rng.randint(1, 4),
                        "hours_per_week": 32 if kind == "apprenticeship" else 38,
                        "starts_on": "2027-02-01",
                        "contact_email": f"hr@{company_id}.example.nl",
                    },
                )
            )
    total = len(SCHOOLS) + len(COMPANIES) + len(vacancies) + students
    producer = AIOKafkaProducer(bootstrap_servers=endpoints["kafka"], acks="all")
    await producer.start()
    try:
        async with httpx.AsyncClient(timeout=20, transport=PatientTransport()) as client:
            with Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
            ) as bar:
                task = bar.add_task("IJmond network", total=total)
                for organisation_id, name, pc4, city, brin in SCHOOLS:
                    data: dict[str, Any] = {
                        "organisation_id": organisation_id,
                        "kind": "school",
                        "name": name,
                        "brin_code": brin,
                        "email": f"stage@{organisation_id}.example.nl",
                        "postcode": _postcode(pc4, rng),
                        "city": city,
                    }
                    keys[organisation_id] = await _register(client, api, operator, data)
                    bar.advance(task)
                for organisation_id, name, pc4, sectors, _ in COMPANIES:
                    data = {
                        "organisation_id": organisation_id,
                        "kind": "company",
                        "name": name,
                        "sectors": sectors,
                        "kvk_number": f"{rng.randint(10_000_000, 99_999_999)}",
                        "accredited_training_company": True,
                        "email": f"info@{organisation_id}.example.nl",
                        "postcode": _postcode(pc4, rng),
                        "city": "IJmond",
                    }
                    keys[organisation_id] = await _register(client, api, operator, data)
                    bar.advance(task)
                for company_id, vacancy in vacancies:
                    response = await client.post(
                        f"{api}/vacancies", json=vacancy, headers=_bearer(keys[company_id])
                    )
                    response.raise_for_status()
                    bar.advance(task)
                for index in range(students):
                    school = SCHOOLS[index % len(SCHOOLS)]
                    student = _student(index, school, rng, ijmond)
                    if school[0] == "ijmond-vakcollege":
                        # This school's student system publishes to the partner ingress topic.
                        event = Envelope(
                            type=ce_type("student.registered"),
                            source=f"/partners/{school[0]}",
                            subject=student["student_id"],
                            data=student,
                        )
                        record = to_binary(event)
                        await producer.send_and_wait(
                            partner_topics(school[0]).ingress,
                            record.value,
                            key=record.key,
                            headers=record.header_list(),
                        )
                    else:
                        response = await client.post(
                            f"{api}/students", json=student, headers=_bearer(keys[school[0]])
                        )
                        response.raise_for_status()
                    bar.advance(task)
            await asyncio.sleep(3)  # let the last events flow through matching
            await _show(client, api, keys, vacancies)
    finally:
        await producer.stop()
    console.print(
        f"Captured email: [bold]{endpoints.get('mail_dir')}[/] (one .eml per message; digests go out "
        f"after NOTIFY_DIGEST_SECONDS)"
    )


class PatientTransport(httpx.AsyncBaseTransport):
    """What a well-behaved partner client does when the gateway says 429: waits the `Retry-After` it gives,
    then asks again (a few times at most). A school's key may send 20 requests a second; the demo's students
    go faster than that once they are already there (a second demo), and the demo stopped on the first 429."""

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None, attempts: int = 6) -> None:
        self._inner = inner or httpx.AsyncHTTPTransport()
        self._attempts = attempts

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for _ in range(self._attempts - 1):
            response = await self._inner.handle_async_request(request)
            if response.status_code != 429:
                return response
            await response.aclose()
            retry_after = response.headers.get("Retry-After", "1")
            await asyncio.sleep(min(60.0, float(retry_after)) if retry_after.isdigit() else 1.0)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _register(
    client: httpx.AsyncClient, api: str, operator: dict[str, str], data: dict[str, Any]
) -> str:
    response = await client.post(f"{api}/organisations", json=data, headers=operator)
    if response.status_code == 201:
        return str(response.json()["api_key"])
    if response.status_code == 200:  # already there from an earlier demo: mint a fresh key
        minted = await client.post(
            f"{api}/organisations/{data['organisation_id']}/api-keys", headers=operator
        )
        minted.raise_for_status()
        return str(minted.json()["api_key"])
    response.raise_for_status()
    raise RuntimeError(response.text)


async def _show(client: httpx.AsyncClient, api: str, keys: dict[str, str], vacancies: list) -> None:
    table = Table(title="Candidates per vacancy (best first)")
    for column in ("vacancy", "candidates", "best match", "score"):
        table.add_column(column)
    total = 0
    for company_id, vacancy in vacancies:
        response = await client.get(
            f"{api}/vacancies/{vacancy['vacancy_id']}/matches", headers=_bearer(keys[company_id])
        )
        candidates = response.json() if response.status_code == 200 else []
        total += len(candidates)
        best = candidates[0] if candidates else None
        table.add_row(
            vacancy["title"],
            str(len(candidates)),
            best["given_name"] if best else "-",
            f"{best['score']:.2f}" if best else "-",
        )
    console.print(table)
    console.print(f"{total} matches in all.")


def run_demo(var: Path, students: int, operator_key: str | None, seed: int) -> None:
    endpoints_file = var / "run" / "endpoints.json"
    if not endpoints_file.exists():
        raise SystemExit("start the platform first: make run (it writes var/run/endpoints.json)")
    key = operator_key or os.environ.get("TECHPORT_OPERATOR_KEY")
    if not key:
        raise SystemExit("the operator key: --operator-key or TECHPORT_OPERATOR_KEY (make run prints it)")
    started = time.perf_counter()
    asyncio.run(_demo(json.loads(endpoints_file.read_text()), key, students, seed))
    console.print(f"demo done in {time.perf_counter() - started:.1f}s")
