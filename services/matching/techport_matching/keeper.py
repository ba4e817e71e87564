"""The in-memory index, kept in step with matching's database: built from it at start (and by hand), then
caught up by change marks before every decision, so each replica matches against every student and vacancy
any replica stored, though it consumes only its share of the partitions. The database is the one way in:
the index never takes an event's word for what is stored."""

from __future__ import annotations

from collections.abc import Callable

from techport_matching.index import MatchingIndex
from techport_matching.metrics import INDEX_BYTES, INDEX_SIZE
from techport_matching.store import MatchingRepository, VacancyRow


class IndexKeeper:
    def __init__(self, top_k_per_vacancy: int) -> None:
        self.index = MatchingIndex()
        self._top_k = top_k_per_vacancy
        # Rows marked at or after this may not be in the index yet.
        self._horizon = 0

    async def rebuild(
        self, repo: MatchingRepository, progress: Callable[[int, int], None] | None = None
    ) -> None:
        """A fresh index from the database, swapped in when complete."""
        fresh = MatchingIndex()
        horizon = await repo.horizon()  # what commits after this is caught up later
        total = await repo.count_students()
        done = 0
        async for profiles in repo.stream_students():
            fresh.load_students(profiles)
            done += len(profiles)
            if progress:
                progress(done, total)
        for vacancy in await repo.open_vacancies():
            self._put_vacancy(fresh, vacancy)
        fresh.warm()
        self.index, self._horizon = fresh, horizon
        self.observe()

    async def catch_up(self, repo: MatchingRepository) -> None:
        """Take in what was written since the last look, by this replica or another."""
        horizon = await repo.horizon()
        students, vacancies, erased = await repo.changed_since(self._horizon)
        self.index.load_students(students)
        for vacancy in vacancies:
            self._put_vacancy(self.index, vacancy)
        for student_id in erased:
            self.index.remove_student(student_id)
        self._horizon = max(self._horizon, horizon)

    def _put_vacancy(self, index: MatchingIndex, vacancy: VacancyRow) -> None:
        index.upsert_vacancy(vacancy.profile())
        index.set_full(vacancy.vacancy_id, vacancy.open_matches >= self._top_k)

    def observe(self) -> None:
        stats = self.index.stats()
        INDEX_SIZE.labels("student").set(stats.students)
        INDEX_SIZE.labels("vacancy").set(stats.vacancies)
        INDEX_BYTES.set(stats.nbytes)
